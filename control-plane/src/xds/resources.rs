//! Envoy resources generated from a [`Config`]: the listener with the filter chain
//! of ARCHITECTURE.md §2, the route, and one cluster per provider.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::{
    router::v3 as router, upstream_codec::v3 as upstream_codec, wasm::v3 as wasm_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::matching::common_inputs::network::v3 as inputs;
use envoy_types::pb::envoy::extensions::router::cluster_specifiers::matcher::v3 as cluster_matcher;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::envoy::r#type::matcher::v3 as type_matcher;
use envoy_types::pb::google::protobuf::{Any, Duration, StringValue, UInt32Value, UInt64Value};
use envoy_types::pb::xds::core::v3 as xds_core;
use envoy_types::pb::xds::r#type::matcher::v3 as xds_matcher;
use prost::{Message, Name};
use switchyard_core::config::{FilterConfig, Provider as FilterProvider, Role, Transport};
use switchyard_core::wire;

use crate::config::{Config, FilterBuild, Provider};

/// Name of the generated listener.
pub const LISTENER_NAME: &str = "switchyard";
/// Name of the cluster that reaches the control plane's fleet exchange.
pub const FLEET_CLUSTER: &str = "switchyard_fleet";

/// The bootstrap's cluster to the control plane's xDS port (`switchyard
/// bootstrap`), which also carries the gRPC fleet stream.
pub const XDS_CLUSTER: &str = "switchyard_xds";
/// How often each filter worker exchanges outcomes and fleet state.
pub const FLEET_INTERVAL_MS: u64 = 250;

/// Name of the generated route configuration.
pub const ROUTE_NAME: &str = "switchyard";
/// `vm_id` shared by planner and adapter (they must share one VM per worker).
pub const VM_ID: &str = "switchyard";
/// Prefix of the native module's stats (`switchyard.<name>`).
pub const NATIVE_METRICS_NAMESPACE: &str = "switchyard";
/// Streams one client HTTP/2 connection may hold at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// CA bundle used to verify providers' certificates.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Type URLs of the resources served.
pub mod type_url {
    /// Listener.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RouteConfiguration.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Cluster.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// TypedExtensionConfig (extension config discovery, ECDS).
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
}

/// Packs a message into `Any`.
pub fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

pub(crate) fn duration_ms(ms: u64) -> Duration {
    Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

fn typed_ext<M: Message + Name>(name: &str, m: &M) -> core::TypedExtensionConfig {
    core::TypedExtensionConfig {
        name: name.to_string(),
        typed_config: Some(any(m)),
    }
}

fn xds_ext<M: Message + Name>(name: &str, m: &M) -> xds_core::TypedExtensionConfig {
    xds_core::TypedExtensionConfig {
        name: name.to_string(),
        typed_config: Some(any(m)),
    }
}

/// Name of the cluster for a provider.
pub fn cluster_name(p: &Provider) -> String {
    wire::provider_cluster(&p.name)
}

/// The providers' credentials and their version (a digest of them), as the
/// fleet exchange delivers them.
pub fn credentials(cfg: &Config) -> switchyard_core::fleet::Credentials {
    use sha2::Digest;
    let providers: std::collections::BTreeMap<String, switchyard_core::fleet::Secrets> = cfg
        .providers
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                switchyard_core::fleet::Secrets {
                    api_keys: p.api_keys.clone(),
                    aws: p.aws.clone(),
                },
            )
        })
        .collect();
    let digest = sha2::Sha256::digest(serde_json::to_vec(&providers).unwrap_or_default());
    let version = switchyard_core::sigv4::hex(&digest[..12]);
    switchyard_core::fleet::Credentials { version, providers }
}

/// The JSON config a filter role receives on Envoy `node`. With the fleet
/// exchange on, credentials come through it (authenticated, and in no config
/// that Envoy's `/config_dump` shows); without it they go to the adapter. The
/// planner's fleet link names the node it reports as.
pub fn filter_config(cfg: &Config, role: Role, node: &str) -> FilterConfig {
    let in_config = role == Role::Adapter && cfg.fleet.is_none();
    FilterConfig {
        version: cfg.version.clone(),
        role,
        providers: cfg
            .providers
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    FilterProvider {
                        dialect: p.dialect,
                        cluster: cluster_name(p),
                        authority: p.authority(),
                        base_path: p.base_path.clone(),
                        api_version: p.api_version.clone(),
                        api_keys: if in_config {
                            p.api_keys.clone()
                        } else {
                            Vec::new()
                        },
                        key_count: p.api_keys.len().max(1),
                        aws: p.aws.clone().filter(|_| in_config),
                        headers: if role == Role::Adapter {
                            p.headers.clone()
                        } else {
                            Vec::new()
                        },
                        forward_headers: p.forward_headers.clone(),
                    },
                )
            })
            .collect(),
        routes: cfg.routes.clone(),
        prices: cfg.prices.clone(),
        models: cfg.models.clone(),
        credentials_from_fleet: cfg.fleet.is_some(),
        observers: switchyard_core::config::Observers {
            spans: cfg.tracing.is_some(),
            decisions: cfg.decision_log.is_some(),
        },
        health_check: cfg.health_check.clone().filter(|_| role == Role::Adapter),
        default_policy: cfg.default_policy.clone(),
        max_request_bytes: cfg.max_request_bytes,
        max_attempts: cfg.max_attempts,
        circuit_breaker: cfg.circuit_breaker.clone(),
        fleet: cfg
            .fleet
            .as_ref()
            .filter(|_| role == Role::Planner)
            .map(|_| {
                let transport = cfg.fleet_transport;
                switchyard_core::config::Link {
                    cluster: match transport {
                        Transport::Http => FLEET_CLUSTER.to_string(),
                        // The bootstrap's own cluster (HTTP/2, TLS when the
                        // control channel has it).
                        Transport::Grpc => cfg.fleet_stream_cluster.clone(),
                    },
                    interval_ms: FLEET_INTERVAL_MS,
                    transport,
                    node: node.to_string(),
                }
            }),
        forward_headers: cfg.forward_headers.clone(),
        retry_budget: cfg.retry_budget.map(|(percent, min_concurrency)| {
            switchyard_core::config::RetryBudget {
                percent,
                min_concurrency,
            }
        }),
        // The planner authenticates and admits (keys come through the fleet
        // exchange, not in this config).
        governance: (cfg.governance_on && role == Role::Planner).then_some(
            switchyard_core::config::Governance {
                completion_estimate: cfg.governance.completion_estimate,
            },
        ),
    }
}

/// The filter config of `role` for Envoys whose xDS server is another (istiod:
/// the in-mesh `EnvoyFilter`, docs/deploy.md): each provider's cluster named as
/// Istio names a `ServiceEntry`'s port 80 (`outbound|80||<host>`; a
/// `DestinationRule` originates TLS); with `fleet` (the control plane's
/// Service host and xDS port) the planner holds the fleet stream through
/// `outbound|<port>||<host>` (mutual TLS by a `DestinationRule`; the control
/// plane runs `--fleet-without-xds`) under the proxy's own node id, and
/// credentials come that way, in no config; without it the adapter carries
/// them.
pub fn mesh_filter_config(cfg: &Config, role: Role, fleet: Option<(&str, u16)>) -> FilterConfig {
    let mut mesh = cfg.clone();
    mesh.fleet = fleet.map(|(host, port)| crate::config::FleetEndpoint {
        host: host.to_string(),
        port,
        tls: true,
    });
    if let Some((host, port)) = fleet {
        mesh.fleet_transport = Transport::Grpc;
        mesh.fleet_stream_cluster = format!("outbound|{port}||{host}");
    }
    // No node: the Wasm filter reports under the proxy's own (`xds.node.id`).
    let mut fc = filter_config(&mesh, role, "");
    for p in &cfg.providers {
        if let Some(fp) = fc.providers.get_mut(&p.name) {
            fp.cluster = format!("outbound|80||{}", p.host);
        }
    }
    fc
}

/// Name of the filter of `role` in the listener, and of its extension config
/// when the filters come by ECDS: `switchyard.<role>.<build>`, where `build`
/// names the filter build (a hash of its path). A new
/// build is a new listener (planner and adapter swapped together: they share
/// the per-request ledger of one VM, which two separate ECDS updates would
/// split), a new config of the same build an ECDS update in place.
pub fn extension_name(cfg: &Config, role: Role) -> String {
    let role = match role {
        Role::Planner => "planner",
        Role::Adapter => "adapter",
    };
    // By the path: a new build is a new file (`serve` and `ecds` exclude each
    // other, so the path names the build).
    let build = crate::config::fnv1a(cfg.filter.path().display().to_string().as_bytes());
    format!("switchyard.{role}.{build:016x}")
}

/// The Switchyard filter for `role` on `node`: inline, or, with `filter.ecds`,
/// a reference to its extension config (Envoy warms the listener until that
/// config came: no request passes without the filter).
fn switchyard_filter(cfg: &Config, role: Role, node: &str) -> hcm::HttpFilter {
    if !cfg.filter_ecds {
        return inline_filter(cfg, role, node);
    }
    let type_url = match &cfg.filter {
        FilterBuild::Wasm(_) => <wasm_filter::Wasm as Name>::type_url(),
        FilterBuild::Native(_) => <envoy_types::pb::envoy::extensions::filters::http::dynamic_modules::v3::DynamicModuleFilter as Name>::type_url(),
    };
    hcm::HttpFilter {
        name: extension_name(cfg, role),
        config_type: Some(hcm::http_filter::ConfigType::ConfigDiscovery(
            core::ExtensionConfigSource {
                config_source: Some(ads_source()),
                type_urls: vec![type_url],
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// The filters' extension configs for `node` (ECDS): one per role, named
/// [`extension_name`].
pub fn extension_configs(cfg: &Config, node: &str) -> Vec<(String, Any)> {
    [Role::Planner, Role::Adapter]
        .into_iter()
        .map(|role| {
            let typed_config = match inline_filter(cfg, role, node).config_type {
                Some(hcm::http_filter::ConfigType::TypedConfig(a)) => Some(a),
                _ => None,
            };
            let name = extension_name(cfg, role);
            (
                name.clone(),
                any(&core::TypedExtensionConfig { name, typed_config }),
            )
        })
        .collect()
}

/// The Switchyard filter for `role` on `node`, in the build the config names,
/// with its config inline.
fn inline_filter(cfg: &Config, role: Role, node: &str) -> hcm::HttpFilter {
    let json = serde_json::to_string(&filter_config(cfg, role, node)).unwrap_or_default();
    match &cfg.filter {
        FilterBuild::Wasm(path) => wasm_filter(wasm_code(cfg, path), role, json),
        FilterBuild::Native(path) => native_filter(path, json),
    }
}

/// The native dynamic module (`envoy.filters.http.dynamic_modules`). One `.so`
/// for both roles (the JSON config says which); never unloaded, so the state all
/// workers share survives config changes.
fn native_filter(path: &std::path::Path, json: String) -> hcm::HttpFilter {
    let module = envoy_types::pb::envoy::extensions::dynamic_modules::v3::DynamicModuleConfig {
        do_not_close: true,
        metrics_namespace: NATIVE_METRICS_NAMESPACE.to_string(),
        module: Some(local_file(path)),
        ..Default::default()
    };
    http_filter(
        "envoy.filters.http.dynamic_modules",
        &envoy_types::pb::envoy::extensions::filters::http::dynamic_modules::v3::DynamicModuleFilter {
            dynamic_module_config: Some(module),
            filter_name: "switchyard".to_string(),
            filter_config: Some(any(&StringValue { value: json })),
            ..Default::default()
        },
    )
}

/// Where Envoy gets the Wasm code: the file at `path` on its own host, or, when
/// the control plane serves it, over HTTP from the status port through the fleet
/// cluster, checked against its SHA-256 (a listener whose code cannot be fetched
/// or does not match is not installed; fetches are retried with back-off).
fn wasm_code(cfg: &Config, path: &std::path::Path) -> core::AsyncDataSource {
    let (Some(served), Some(ep)) = (&cfg.served_filter, &cfg.fleet) else {
        return local_file(path);
    };
    core::AsyncDataSource {
        specifier: Some(core::async_data_source::Specifier::Remote(
            core::RemoteDataSource {
                http_uri: Some(core::HttpUri {
                    uri: format!("http://{}:{}{}", ep.host, ep.port, served.url_path()),
                    timeout: Some(duration_ms(30_000)),
                    http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                        FLEET_CLUSTER.to_string(),
                    )),
                }),
                sha256: served.sha256.clone(),
                retry_policy: Some(core::RetryPolicy {
                    retry_back_off: Some(core::BackoffStrategy {
                        base_interval: Some(duration_ms(500)),
                        max_interval: Some(duration_ms(5_000)),
                    }),
                    num_retries: Some(UInt32Value { value: 10 }),
                    ..Default::default()
                }),
            },
        )),
    }
}

/// The file at `path` on the Envoy's own host.
fn local_file(path: &std::path::Path) -> core::AsyncDataSource {
    core::AsyncDataSource {
        specifier: Some(core::async_data_source::Specifier::Local(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::Filename(
                    path.display().to_string(),
                )),
                ..Default::default()
            },
        )),
    }
}

fn wasm_filter(code: core::AsyncDataSource, role: Role, json: String) -> hcm::HttpFilter {
    let role_name = match role {
        Role::Planner => "planner",
        Role::Adapter => "adapter",
    };
    let plugin = wasm::PluginConfig {
        name: format!("switchyard_{role_name}"),
        root_id: "switchyard".to_string(),
        configuration: Some(any(&StringValue { value: json })),
        allow_on_headers_stop_iteration: Some(envoy_types::pb::google::protobuf::BoolValue {
            value: true,
        }),
        vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
            vm_id: VM_ID.to_string(),
            runtime: "envoy.wasm.runtime.v8".to_string(),
            code: Some(code),
            ..Default::default()
        })),
        ..Default::default()
    };
    http_filter(
        "envoy.filters.http.wasm",
        &wasm_filter::Wasm {
            config: Some(plugin),
        },
    )
}

fn http_filter<M: Message + Name>(name: &str, m: &M) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(m))),
        ..Default::default()
    }
}

/// The listener: planner → router, with the adapter as the router's upstream filter.
///
/// The planner holds the request headers (`allow_on_headers_stop_iteration`) until
/// it has read the whole body and planned, then sets the per-request router knobs
/// itself: no buffer or header_mutation filter is needed.
///
/// One listener per Envoy: the planner's config carries the node id (empty for
/// the shared template), so every resource but this one is the same for all.
pub fn listener(cfg: &Config, node: &str) -> listener::Listener {
    let http_filters = vec![
        switchyard_filter(cfg, Role::Planner, node),
        http_filter(
            "envoy.filters.http.router",
            &router::Router {
                upstream_http_filters: vec![
                    switchyard_filter(cfg, Role::Adapter, node),
                    http_filter(
                        "envoy.filters.http.upstream_codec",
                        &upstream_codec::UpstreamCodec::default(),
                    ),
                ],
                ..Default::default()
            },
        ),
    ];
    let manager = hcm::HttpConnectionManager {
        stat_prefix: "switchyard".to_string(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: Some(ads_source()),
                route_config_name: ROUTE_NAME.to_string(),
            },
        )),
        http_filters,
        always_set_request_id_in_response: true,
        // No client is trusted as internal (Envoy strips `x-envoy-*` from external
        // requests; the planner removes every header outside its allow-list anyway),
        // but a client's own `x-request-id` is kept for correlation.
        use_remote_address: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        internal_address_config: Some(hcm::http_connection_manager::InternalAddressConfig {
            unix_sockets: false,
            cidr_ranges: Vec::new(),
        }),
        preserve_external_request_id: true,
        // A client must send its request in bounded time (the planner holds a
        // body until its end: a stalled sender would pin it). Both timers stop
        // once the request is in, so answers streaming for minutes are not cut;
        // `stream_idle_timeout` (Envoy's 5 minutes, both directions) is left alone.
        request_headers_timeout: Some(duration_ms(cfg.request_headers_timeout_ms)),
        request_timeout: Some(duration_ms(cfg.request_timeout_ms)),
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: Some(duration_ms(cfg.connection_idle_timeout_ms)),
            ..Default::default()
        }),
        // Each stream may buffer a body up to the connection's buffer limit: an
        // HTTP/2 client must not multiply that by Envoy's default of 2^31 streams.
        http2_protocol_options: Some(core::Http2ProtocolOptions {
            max_concurrent_streams: Some(UInt32Value {
                value: MAX_CONCURRENT_STREAMS,
            }),
            ..Default::default()
        }),
        // Envoy treats any local 400 as an HTTP/1 messaging error and closes the
        // connection, dropping a request the client pipelined behind it; the
        // gateway's 400s are about the JSON, not the HTTP.
        http_protocol_options: Some(core::Http1ProtocolOptions {
            override_stream_error_on_invalid_http_message: Some(
                envoy_types::pb::google::protobuf::BoolValue { value: true },
            ),
            ..Default::default()
        }),
        // A connection Envoy closes (e.g. after an upstream reset mid-stream) is
        // closed once its last bytes are flushed, not one second later (Envoy's
        // default delayed close): the client learns of the failure at once.
        delayed_close_timeout: Some(duration_ms(0)),
        // Traces and the decision log (`tracing:`, `decision_log:`).
        tracing: super::observe::tracing(cfg),
        access_log: super::observe::access_logs(cfg),
        ..Default::default()
    };
    listener::Listener {
        name: LISTENER_NAME.to_string(),
        // The clients' way in. The gateway's preStop drains only INBOUND
        // listeners (`/drain_listeners?graceful&inboundonly`), which leaves the
        // bootstrap's stats listener (`switchyard bootstrap --stats-addr`)
        // serving Prometheus until Envoy exits.
        traffic_direction: core::TrafficDirection::Inbound as i32,
        // The planner holds the whole request body (StopIterationAndBuffer), which is
        // bounded by this limit; keep it above the planner's own so the planner's
        // OpenAI-shaped 413 answers first.
        per_connection_buffer_limit_bytes: Some(UInt32Value {
            value: buffer_limit(cfg),
        }),
        address: Some(socket_address(&cfg.listener_address, cfg.listener_port)),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(&manager))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn buffer_limit(cfg: &Config) -> u32 {
    u32::try_from(cfg.max_request_bytes.saturating_add(64 * 1024)).unwrap_or(u32::MAX)
}

fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn socket_address(address: &str, port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: address.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                port,
            ))),
            ..Default::default()
        })),
    }
}

// === route ===

fn cluster_action(cluster: &str) -> xds_matcher::matcher::OnMatch {
    xds_matcher::matcher::OnMatch {
        on_match: Some(xds_matcher::matcher::on_match::OnMatch::Action(xds_ext(
            cluster,
            &cluster_matcher::ClusterAction {
                cluster: cluster.to_string(),
            },
        ))),
        ..Default::default()
    }
}

fn exact_tree<M: Message + Name>(
    input_name: &str,
    input: &M,
    map: HashMap<String, xds_matcher::matcher::OnMatch>,
) -> xds_matcher::Matcher {
    xds_matcher::Matcher {
        matcher_type: Some(xds_matcher::matcher::MatcherType::MatcherTree(
            xds_matcher::matcher::MatcherTree {
                input: Some(xds_ext(input_name, input)),
                tree_type: Some(xds_matcher::matcher::matcher_tree::TreeType::ExactMatchMap(
                    xds_matcher::matcher::matcher_tree::MatchMap { map },
                )),
            },
        )),
        ..Default::default()
    }
}

/// Slot `k`'s matcher: the cluster named by filter state `wasm.sy_slot<k>`.
fn slot_matcher(cfg: &Config, k: usize) -> xds_matcher::Matcher {
    let map = cfg
        .providers
        .iter()
        .map(|p| (cluster_name(p), cluster_action(&cluster_name(p))))
        .collect();
    let input = inputs::FilterStateInput {
        key: cfg
            .filter
            .state_key(&format!("{}{k}", wire::SLOT_STATE_PREFIX)),
        ..Default::default()
    };
    exact_tree(&format!("slot{k}"), &input, map)
}

fn nested(m: xds_matcher::Matcher) -> xds_matcher::matcher::OnMatch {
    xds_matcher::matcher::OnMatch {
        on_match: Some(xds_matcher::matcher::on_match::OnMatch::Matcher(Box::new(
            m,
        ))),
        ..Default::default()
    }
}

/// Per-attempt cluster selection. When the matcher runs for attempt `k`,
/// `x-envoy-attempt-count` still holds `k - 1` (absent for the first attempt):
/// ARCHITECTURE.md §1's off-by-one. So absent → slot 1, "1" → slot 2, "2" → slot 3…
pub fn attempt_matcher(cfg: &Config) -> xds_matcher::Matcher {
    let map = (2..=cfg.max_attempts)
        .map(|k| ((k - 1).to_string(), nested(slot_matcher(cfg, k))))
        .collect();
    let input = type_matcher::HttpRequestHeaderMatchInput {
        header_name: "x-envoy-attempt-count".to_string(),
    };
    let mut m = exact_tree("attempt", &input, map);
    m.on_no_match = Some(Box::new(nested(slot_matcher(cfg, 1))));
    m
}

/// The cluster matcher of the route: a hedged request names its chain's composite
/// cluster in filter state `wasm.sy_chain`; every other request goes through the
/// per-attempt slots.
pub fn cluster_matcher(cfg: &Config) -> xds_matcher::Matcher {
    let chains: HashMap<String, xds_matcher::matcher::OnMatch> = cfg
        .routes
        .values()
        .filter_map(|r| r.hedge_cluster.clone())
        .map(|c| (c.clone(), cluster_action(&c)))
        .collect();
    if chains.is_empty() {
        return attempt_matcher(cfg);
    }
    let input = inputs::FilterStateInput {
        key: cfg.filter.state_key(wire::CHAIN_STATE),
        ..Default::default()
    };
    let mut m = exact_tree("chain", &input, chains);
    m.on_no_match = Some(Box::new(nested(attempt_matcher(cfg))));
    m
}

/// Composite clusters for hedged routes: attempt k (retry or hedge) goes to the
/// k-th target's provider cluster (Envoy's `envoy.clusters.composite`).
pub fn chain_clusters(cfg: &Config) -> Vec<cluster::Cluster> {
    cfg.routes
        .values()
        .filter_map(|r| {
            let name = r.hedge_cluster.clone()?;
            let config = envoy_types::pb::envoy::extensions::clusters::composite::v3::ClusterConfig {
                clusters: r
                    .chain
                    .iter()
                    .map(|t| envoy_types::pb::envoy::extensions::clusters::composite::v3::cluster_config::ClusterEntry {
                        name: wire::provider_cluster(&t.provider),
                    })
                    .collect(),
            };
            Some(cluster::Cluster {
                name,
                connect_timeout: Some(duration_ms(1000)),
                lb_policy: cluster::cluster::LbPolicy::ClusterProvided as i32,
                cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::ClusterType(
                    cluster::cluster::CustomClusterType {
                        name: "envoy.clusters.composite".to_string(),
                        typed_config: Some(any(&config)),
                    },
                )),
                ..Default::default()
            })
        })
        .collect()
}

/// The route: every request goes through the slot matcher, retried across slots.
pub fn route_configuration(cfg: &Config) -> route::RouteConfiguration {
    let specifier = cluster_matcher::MatcherClusterSpecifier {
        cluster_matcher: Some(cluster_matcher(cfg)),
    };
    let retry_policy = route::RetryPolicy {
        // What is retried is the request's policy: the planner sets
        // x-envoy-retry-on and x-envoy-retriable-status-codes on every request.
        retry_on: "retriable-status-codes".to_string(),
        retriable_status_codes: vec![],
        num_retries: Some(UInt32Value {
            value: (cfg.max_attempts - 1) as u32,
        }),
        retry_back_off: Some(route::retry_policy::RetryBackOff {
            base_interval: Some(duration_ms(cfg.backoff_base_ms)),
            max_interval: Some(duration_ms(cfg.backoff_max_ms)),
        }),
        refresh_cluster_on_retry: true,
        per_try_idle_timeout: cfg.stream_idle_timeout_ms.map(duration_ms),
        ..Default::default()
    };
    let action = route::RouteAction {
        cluster_specifier: Some(
            route::route_action::ClusterSpecifier::InlineClusterSpecifierPlugin(
                route::ClusterSpecifierPlugin {
                    extension: Some(typed_ext(
                        "envoy.router.cluster_specifier_plugin.matcher",
                        &specifier,
                    )),
                    is_optional: false,
                },
            ),
        ),
        // LLM answers stream for minutes: no overall route timeout by default.
        timeout: Some(Duration {
            seconds: 0,
            nanos: 0,
        }),
        retry_policy: Some(retry_policy),
        ..Default::default()
    };
    route::RouteConfiguration {
        name: ROUTE_NAME.to_string(),
        virtual_hosts: vec![route::VirtualHost {
            name: "switchyard".to_string(),
            domains: vec!["*".to_string()],
            include_request_attempt_count: true,
            // Retries replay the buffered body; past this limit Envoy stops retrying.
            request_body_buffer_limit: Some(UInt64Value {
                value: u64::from(buffer_limit(cfg)),
            }),
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix(
                        "/".to_string(),
                    )),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

// === clusters ===

/// One cluster per provider: static for IP literals, logical DNS for names; TLS with
/// SNI and certificate verification for https.
/// TLS to a public server: SNI `host`, `alpn`, verified against the system CAs.
pub fn upstream_tls(host: &str, alpn: &[&str]) -> core::TransportSocket {
    let ctx = tls::UpstreamTlsContext {
        sni: host.to_string(),
        common_tls_context: Some(tls::CommonTlsContext {
            alpn_protocols: alpn.iter().map(|a| (*a).to_string()).collect(),
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(
                    tls::CertificateValidationContext {
                        trusted_ca: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::Filename(
                                CA_BUNDLE.to_string(),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

pub fn provider_cluster(p: &Provider, budget: Option<(f64, u32)>) -> cluster::Cluster {
    let name = cluster_name(p);
    let discovery = if p.host_is_ip() {
        cluster::cluster::DiscoveryType::Static
    } else {
        cluster::cluster::DiscoveryType::LogicalDns
    };
    let protocol = if p.tls {
        upstream_http::http_protocol_options::UpstreamProtocolOptions::AutoConfig(
            upstream_http::http_protocol_options::AutoHttpConfig {
                http_protocol_options: Some(core::Http1ProtocolOptions::default()),
                http2_protocol_options: Some(core::Http2ProtocolOptions::default()),
                ..Default::default()
            },
        )
    } else {
        upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            upstream_http::http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                        core::Http1ProtocolOptions::default(),
                    ),
                ),
            },
        )
    };
    let options = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(protocol),
        ..Default::default()
    };
    let transport_socket = p.tls.then(|| upstream_tls(&p.host, &["h2", "http/1.1"]));
    // Envoy's default thresholds (e.g. 3 concurrent retries per cluster) would turn
    // fail-over into 503s under load; fail-over volume is bounded by the plan instead.
    let thresholds = cluster::circuit_breakers::Thresholds {
        max_connections: Some(UInt32Value { value: 100_000 }),
        max_pending_requests: Some(UInt32Value { value: 100_000 }),
        max_requests: Some(UInt32Value { value: 100_000 }),
        max_retries: Some(UInt32Value { value: 100_000 }),
        retry_budget: budget.map(|(percent, min)| {
            cluster::circuit_breakers::thresholds::RetryBudget {
                budget_percent: Some(envoy_types::pb::envoy::r#type::v3::Percent {
                    value: percent,
                }),
                min_retry_concurrency: Some(UInt32Value { value: min }),
                ..Default::default()
            }
        }),
        ..Default::default()
    };
    cluster::Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            discovery as i32,
        )),
        connect_timeout: Some(duration_ms(p.connect_timeout_ms)),
        dns_lookup_family: cluster::cluster::DnsLookupFamily::V4Preferred as i32,
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            any(&options),
        )]
        .into_iter()
        .collect(),
        circuit_breakers: Some(cluster::CircuitBreakers {
            thresholds: vec![thresholds],
            ..Default::default()
        }),
        transport_socket,
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket_address(&p.host, p.port)),
                            hostname: p.host.clone(),
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

/// The cluster filters use to reach the control plane's fleet exchange
/// (HTTP/1.1). With TLS on the status port it presents the Envoy's client
/// certificate and checks the control plane's, both through the file-based SDS
/// secrets the Envoy's bootstrap declared in `sds_dir` (the same subscription
/// as its xDS cluster's: Envoy watches the files and rotates both).
pub fn fleet_cluster(ep: &crate::config::FleetEndpoint, sds_dir: Option<&str>) -> cluster::Cluster {
    let mut c = provider_cluster(
        &Provider {
            name: "fleet".into(),
            dialect: switchyard_core::dialect::Dialect::Openai,
            tls: false,
            host: ep.host.clone(),
            port: ep.port,
            base_path: String::new(),
            api_keys: Vec::new(),
            connect_timeout_ms: 1000,
            api_version: None,
            aws: None,
            credentials_refresh_s: None,
            headers: Vec::new(),
            forward_headers: Vec::new(),
        },
        None,
    );
    c.name = FLEET_CLUSTER.to_string();
    if let Some(la) = c.load_assignment.as_mut() {
        la.cluster_name = FLEET_CLUSTER.to_string();
    }
    if let Some(dir) = sds_dir.filter(|_| ep.tls) {
        c.transport_socket = Some(control_plane_tls(&ep.host, "http/1.1", dir));
    }
    c
}

/// The SDS secret reference `name`, read by Envoy from `file` (file-based SDS:
/// Envoy watches the certificate files the secret names).
fn file_sds(name: &str, file: String) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(core::ConfigSource {
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::PathConfigSource(
                    core::PathConfigSource {
                        path: file,
                        ..Default::default()
                    },
                ),
            ),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// Mutual TLS from an Envoy to the control plane at `host`: the client
/// certificate and the CA from the bootstrap's SDS files in `sds_dir`
/// ([`crate::bootstrap::CLIENT_SECRET`], [`crate::bootstrap::CA_SECRET`]), the
/// control plane's certificate checked for `host` (a DNS or IP SAN). The
/// bootstrap's xDS cluster says the same in YAML.
pub fn control_plane_tls(host: &str, alpn: &str, sds_dir: &str) -> core::TransportSocket {
    use crate::bootstrap::{CA_SDS_FILE, CA_SECRET, CLIENT_SDS_FILE, CLIENT_SECRET};
    let dir = sds_dir.trim_end_matches('/');
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    let san_type = if is_ip {
        tls::subject_alt_name_matcher::SanType::IpAddress
    } else {
        tls::subject_alt_name_matcher::SanType::Dns
    };
    let ctx = tls::UpstreamTlsContext {
        // SNI carries host names only.
        sni: if is_ip {
            String::new()
        } else {
            host.to_string()
        },
        common_tls_context: Some(tls::CommonTlsContext {
            alpn_protocols: vec![alpn.to_string()],
            tls_params: Some(tls::TlsParameters {
                tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![file_sds(
                CLIENT_SECRET,
                format!("{dir}/{CLIENT_SDS_FILE}"),
            )],
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                    tls::common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(tls::CertificateValidationContext {
                            match_typed_subject_alt_names: vec![tls::SubjectAltNameMatcher {
                                san_type: san_type as i32,
                                matcher: Some(type_matcher::StringMatcher {
                                    match_pattern: Some(
                                        type_matcher::string_matcher::MatchPattern::Exact(
                                            host.to_string(),
                                        ),
                                    ),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(file_sds(
                            CA_SECRET,
                            format!("{dir}/{CA_SDS_FILE}"),
                        )),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

/// All resources of a config, by type URL.
pub fn resources(cfg: &Config) -> HashMap<&'static str, Vec<(String, Any)>> {
    let mut out = HashMap::new();
    let mut clusters: Vec<(String, Any)> = cfg
        .providers
        .iter()
        // The retry budget is the filter's (same-target retries only): Envoy's own
        // would be charged to the first attempt's cluster and cap fail-over too.
        .map(|p| (cluster_name(p), any(&provider_cluster(p, None))))
        .collect();
    if let Some(ep) = &cfg.fleet {
        // With TLS, each node gets its own (`Snapshot::resources_for`).
        clusters.push((FLEET_CLUSTER.to_string(), any(&fleet_cluster(ep, None))));
    }
    if let Some(t) = &cfg.tracing {
        clusters.push((
            super::observe::COLLECTOR_CLUSTER.to_string(),
            any(&super::observe::collector_cluster(t)),
        ));
    }
    clusters.extend(
        chain_clusters(cfg)
            .into_iter()
            .map(|c| (c.name.clone(), any(&c))),
    );
    out.insert(type_url::CLUSTER, clusters);
    out.insert(
        type_url::LISTENER,
        vec![(LISTENER_NAME.to_string(), any(&listener(cfg, "")))],
    );
    if cfg.filter_ecds {
        out.insert(type_url::EXTENSION_CONFIG, extension_configs(cfg, ""));
    }
    out.insert(
        type_url::ROUTE,
        vec![(ROUTE_NAME.to_string(), any(&route_configuration(cfg)))],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> Config {
        let text = "providers:\n  - {name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1', api_key: {value: secret-a}}\n  - {name: b, dialect: anthropic, base_url: 'https://api.anthropic.com/v1'}\nroutes:\n  - {model: chat, chain: [a/m, b/n]}\n";
        crate::config::parse(text, "t.yaml", Path::new("/"), &|_| None).unwrap()
    }

    #[test]
    fn credentials_only_in_adapter_config() {
        let c = cfg();
        let adapter = filter_config(&c, Role::Adapter, "n");
        let planner = filter_config(&c, Role::Planner, "n");
        assert_eq!(
            adapter.providers["a"].api_keys,
            vec!["secret-a".to_string()]
        );
        assert!(planner.providers["a"].api_keys.is_empty());
        assert_eq!(
            (
                planner.providers["a"].key_count,
                planner.providers["b"].key_count
            ),
            (1, 1)
        );
        assert!(
            !serde_json::to_string(&planner)
                .unwrap()
                .contains("secret-a")
        );
    }

    #[test]
    fn the_gateway_listener_is_inbound() {
        // What `/drain_listeners?inboundonly` (the chart's preStop) stops.
        assert_eq!(
            listener(&cfg(), "n").traffic_direction,
            core::TrafficDirection::Inbound as i32
        );
    }

    #[test]
    fn slots_follow_the_attempt_count_off_by_one() {
        let c = cfg();
        let m = attempt_matcher(&c);
        let Some(xds_matcher::matcher::MatcherType::MatcherTree(tree)) = &m.matcher_type else {
            panic!()
        };
        let Some(xds_matcher::matcher::matcher_tree::TreeType::ExactMatchMap(map)) =
            &tree.tree_type
        else {
            panic!()
        };
        let mut keys: Vec<_> = map.map.keys().cloned().collect();
        keys.sort();
        // max_attempts 4: "1" → slot 2, "2" → slot 3, "3" → slot 4; absent → slot 1.
        assert_eq!(keys, vec!["1", "2", "3"]);
        let slot_key = |on: &xds_matcher::matcher::OnMatch| match &on.on_match {
            Some(xds_matcher::matcher::on_match::OnMatch::Matcher(inner)) => {
                match &inner.matcher_type {
                    Some(xds_matcher::matcher::MatcherType::MatcherTree(t)) => {
                        t.input.as_ref().unwrap().name.clone()
                    }
                    _ => panic!(),
                }
            }
            _ => panic!(),
        };
        assert_eq!(slot_key(&map.map["1"]), "slot2");
        assert_eq!(slot_key(&map.map["3"]), "slot4");
        assert_eq!(slot_key(m.on_no_match.as_ref().unwrap()), "slot1");
    }

    #[test]
    fn tls_only_for_https() {
        let c = cfg();
        assert!(
            provider_cluster(&c.providers[0], None)
                .transport_socket
                .is_none()
        );
        let tls_cluster = provider_cluster(&c.providers[1], None);
        assert!(tls_cluster.transport_socket.is_some());
        assert_eq!(
            tls_cluster.cluster_discovery_type,
            Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::LogicalDns as i32
            ))
        );
    }
}

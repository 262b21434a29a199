//! State-of-the-world ADS server.
//!
//! The current [`Snapshot`] lives in a `watch` channel; every Envoy stream gets a
//! session task that answers subscriptions, pushes new snapshots, and tells ACKs
//! from NACKs by nonce. Each node's accepted version and last NACK are kept in the
//! [`Registry`].

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{self, type_url};
use crate::config::Config;
use switchyard_core::config::Transport;

/// Order in which resource types are pushed: clusters before the listener that
/// routes to them, the listener before its route.
const PUSH_ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::LISTENER,
    type_url::EXTENSION_CONFIG,
    type_url::ROUTE,
];

/// One consistent set of resources.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Version sent as `version_info`.
    pub version: String,
    /// Resources by type URL, each with its name.
    pub resources: HashMap<&'static str, Vec<(String, Any)>>,
    /// Circuit-breaker settings for the fleet aggregate.
    pub breaker: Option<switchyard_core::circuit::Settings>,
    /// Bounds of adaptive weights, when enabled.
    pub adaptive_weights: Option<switchyard_core::fleet::AdaptiveWeights>,
    /// The targets filters report on: `provider/model` of every route's chain.
    pub targets: HashSet<String>,
    /// The route aliases filters report rates on (besides `_direct`).
    pub routes: HashSet<String>,
    /// The providers' credentials, for the fleet exchange (not in any xDS
    /// resource when the exchange is on).
    pub credentials: std::sync::Arc<switchyard_core::fleet::Credentials>,
    /// The config, for each node's own listener.
    config: Option<Config>,
}

impl Snapshot {
    /// The Wasm file the control plane serves to its Envoys, if it does.
    pub fn served_filter(&self) -> Option<&crate::config::ServedFilter> {
        self.config.as_ref()?.served_filter.as_ref()
    }

    /// Builds the snapshot for a config; `serial` makes versions unique per reload.
    pub fn from_config(cfg: &Config, serial: u64) -> Snapshot {
        Snapshot {
            version: format!("{serial}-{}", cfg.version),
            resources: resources::resources(cfg),
            breaker: cfg.circuit_breaker.clone(),
            adaptive_weights: cfg.adaptive_weights.clone(),
            targets: cfg
                .routes
                .values()
                .flat_map(|r| r.chain.iter().map(ToString::to_string))
                .collect(),
            routes: cfg.routes.keys().cloned().collect(),
            credentials: std::sync::Arc::new(resources::credentials(cfg)),
            config: Some(cfg.clone()),
        }
    }

    /// The resources of type `ty` for Envoy `node`: its own listener (the
    /// planner's fleet link names the node, so its reports say who sent them)
    /// and, when the status port runs TLS, its own fleet cluster (with the
    /// certificate files its bootstrap named); everything else shared. A node
    /// that named no certificate files gets no fleet link when TLS is on: its
    /// reports could not be authenticated.
    pub fn resources_for(&self, ty: &str, node: &NodeInfo) -> Cow<'_, [(String, Any)]> {
        let shared = || {
            Cow::Borrowed(
                self.resources
                    .get(ty)
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            )
        };
        let Some(cfg) = &self.config else {
            return shared();
        };
        let tls_fleet = cfg.fleet.as_ref().filter(|f| f.tls);
        if (ty == type_url::LISTENER || ty == type_url::EXTENSION_CONFIG) && !node.id.is_empty() {
            // The filter configs name the node (and its fleet link, if any).
            let adapted;
            let unlinked = tls_fleet.is_some() && node.sds_dir.is_none();
            let stream = cfg.fleet_transport == Transport::Grpc;
            let cfg = if unlinked
                || (stream && node.xds_cluster.as_ref() != Some(&cfg.fleet_stream_cluster))
            {
                let mut c = cfg.clone();
                if unlinked {
                    c.fleet = None;
                }
                match &node.xds_cluster {
                    // The stream goes through the cluster the bootstrap names.
                    Some(name) => c.fleet_stream_cluster.clone_from(name),
                    // A bootstrap that does not say: the HTTP exchange.
                    None => c.fleet_transport = Transport::Http,
                }
                adapted = c;
                &adapted
            } else {
                cfg
            };
            if ty == type_url::EXTENSION_CONFIG {
                return Cow::Owned(if cfg.filter_ecds {
                    resources::extension_configs(cfg, &node.id)
                } else {
                    Vec::new()
                });
            }
            return Cow::Owned(vec![(
                resources::LISTENER_NAME.to_string(),
                resources::any(&resources::listener(cfg, &node.id)),
            )]);
        }
        if ty == type_url::CLUSTER
            && let Some(ep) = tls_fleet
        {
            let mut out: Vec<(String, Any)> = shared().into_owned();
            out.retain(|(name, _)| name != resources::FLEET_CLUSTER);
            if let Some(dir) = &node.sds_dir {
                out.push((
                    resources::FLEET_CLUSTER.to_string(),
                    resources::any(&resources::fleet_cluster(ep, Some(dir))),
                ));
            }
            return Cow::Owned(out);
        }
        shared()
    }
}

/// What the control plane keeps of an Envoy's node from its first request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Where its bootstrap keeps the SDS files of its client certificate and
    /// CA (node metadata [`crate::bootstrap::SDS_DIR_METADATA`]).
    pub sds_dir: Option<String>,
    /// Its bootstrap's cluster to the xDS port, for the fleet stream (node
    /// metadata [`crate::bootstrap::XDS_CLUSTER_METADATA`]).
    pub xds_cluster: Option<String>,
}

impl NodeInfo {
    /// The id and metadata of `node`. An SDS directory that is not an absolute
    /// path of at most 512 printable characters is ignored.
    pub fn of(node: &envoy_types::pb::envoy::config::core::v3::Node) -> NodeInfo {
        use envoy_types::pb::google::protobuf::value::Kind;
        let text = |key: &str| {
            node.metadata
                .as_ref()
                .and_then(|m| m.fields.get(key))
                .and_then(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
        };
        let sds_dir = text(crate::bootstrap::SDS_DIR_METADATA)
            .filter(|d| d.starts_with('/') && d.len() <= 512 && !d.chars().any(char::is_control));
        let xds_cluster = text(crate::bootstrap::XDS_CLUSTER_METADATA).filter(|c| {
            !c.is_empty()
                && c.len() <= 128
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        });
        NodeInfo {
            id: node.id.clone(),
            sds_dir,
            xds_cluster,
        }
    }
}

/// Which nodes a stream may be served as: any (plaintext xDS), or those the
/// client certificate names under the node policy.
#[derive(Clone, Debug)]
pub enum Gate {
    /// No TLS: whoever connects.
    Open,
    /// TLS: the certificate's nodes.
    Certificate {
        /// The verified certificate (`None`: none was presented).
        peer: Option<Arc<crate::tls::Peer>>,
        /// Identity → node rules.
        policy: crate::tls::NodePolicy,
    },
}

impl Gate {
    /// `Ok` when the stream may be served as `node`, else why not.
    pub fn check(&self, node: &str) -> Result<(), String> {
        match self {
            Gate::Open => Ok(()),
            Gate::Certificate { peer: None, .. } => {
                Err("a client certificate is required".to_string())
            }
            Gate::Certificate {
                peer: Some(peer),
                policy,
            } => {
                if node.is_empty() {
                    Err("the first request must name the node".to_string())
                } else if policy.allows(peer, node) {
                    Ok(())
                } else {
                    Err(format!(
                        "{} may not be served as node `{node}`",
                        peer.describe()
                    ))
                }
            }
        }
    }
}

/// What the control plane knows about one connected Envoy.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// Whether its stream is open.
    pub connected: bool,
    /// Accepted version per resource type.
    pub acked: BTreeMap<String, String>,
    /// The last NACK: type, rejected version and Envoy's reason.
    pub last_nack: Option<String>,
    /// Fleet streams open from it (one; two for a moment while its filter
    /// config is replaced).
    #[serde(default)]
    pub fleet_streams: u32,
}

/// Per-node status, shared by all sessions.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    nodes: Arc<Mutex<BTreeMap<String, NodeStatus>>>,
    /// Fleet state also for nodes that never opened an xDS stream here
    /// (`serve --fleet-without-xds`, mutual TLS only).
    without_xds: Arc<std::sync::atomic::AtomicBool>,
}

impl Registry {
    fn update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        if let Ok(mut m) = self.nodes.lock() {
            f(m.entry(node.to_string()).or_default());
        }
    }

    /// Takes fleet reports and streams from nodes without an xDS stream here
    /// (their certificate was checked by the caller's gate).
    pub fn admit_without_xds(&self) {
        self.without_xds
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `node` may exchange fleet state: it opened an xDS stream here,
    /// or nodes without one are admitted.
    pub fn may_report(&self, node: &str) -> bool {
        self.without_xds.load(std::sync::atomic::Ordering::Relaxed) || self.knows(node)
    }

    pub(crate) fn set_connected(&self, node: &str, connected: bool) {
        self.update(node, |s| s.connected = connected);
    }

    pub(crate) fn set_nack(&self, node: &str, message: String) {
        self.update(node, |s| s.last_nack = Some(message));
    }

    pub(crate) fn set_acked(&self, node: &str, type_url: &str, version: String) {
        self.update(node, |s| {
            s.acked.insert(short_type(type_url).to_string(), version);
        });
    }

    /// A fleet stream from `node` opened (`true`) or closed.
    pub(crate) fn fleet_stream(&self, node: &str, open: bool) {
        self.update(node, |s| {
            s.fleet_streams = if open {
                s.fleet_streams.saturating_add(1)
            } else {
                s.fleet_streams.saturating_sub(1)
            };
        });
    }

    /// Whether `node` ever opened an xDS stream to this control plane.
    pub fn knows(&self, node: &str) -> bool {
        self.nodes.lock().is_ok_and(|m| m.contains_key(node))
    }

    /// A copy of every node's status.
    pub fn nodes(&self) -> BTreeMap<String, NodeStatus> {
        self.nodes.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The ADS service.
#[derive(Clone, Debug)]
pub struct Ads {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Registry,
    /// With TLS: which nodes a certificate may be served as.
    policy: Option<crate::tls::NodePolicy>,
}

impl Ads {
    /// A service serving the snapshots published on `snapshots`.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, registry: Registry) -> Self {
        Ads {
            snapshots,
            registry,
            policy: None,
        }
    }

    /// Requires every stream's client certificate to name the node it asks
    /// for, under `policy` (the server must run TLS: a stream without
    /// certificate is refused).
    pub fn with_node_policy(mut self, policy: crate::tls::NodePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    fn gate<T>(&self, request: &Request<T>) -> Gate {
        match &self.policy {
            None => Gate::Open,
            Some(policy) => Gate::Certificate {
                peer: request
                    .extensions()
                    .get::<crate::tls::PeerInfo>()
                    .and_then(|p| p.peer.clone()),
                policy: policy.clone(),
            },
        }
    }

    /// The tonic service.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let session = Session {
            gate: self.gate(&request),
            node: NodeInfo::default(),
            inbound: request.into_inner(),
            tx,
            snapshots: self.snapshots.clone(),
            registry: self.registry.clone(),
            types: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(session.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let gate = self.gate(&request);
        let session = super::delta::DeltaSession::new(
            gate,
            request.into_inner(),
            tx,
            self.snapshots.clone(),
            self.registry.clone(),
        );
        tokio::spawn(session.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Per-type state of one stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Names requested (empty = wildcard).
    names: Vec<String>,
    /// Nonce of the last response sent.
    nonce: String,
    /// Version of the last response sent.
    sent: String,
    /// The names that response answered.
    sent_names: Vec<String>,
}

struct Session {
    gate: Gate,
    node: NodeInfo,
    inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Registry,
    types: HashMap<String, TypeState>,
    nonce: u64,
}

impl Session {
    async fn run(mut self) {
        loop {
            tokio::select! {
                msg = self.inbound.message() => match msg {
                    Ok(Some(req)) => {
                        if self.on_request(req).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::info!(node = %self.node.id, "xDS stream closed: {e}");
                        break;
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if self.push_all().await.is_err() {
                        break;
                    }
                }
            }
        }
        if !self.node.id.is_empty() {
            tracing::info!(node = %self.node.id, "Envoy disconnected");
            self.registry.update(&self.node.id, |s| s.connected = false);
        }
    }

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), ()> {
        if self.node.id.is_empty() {
            let node = req.node.as_ref().map(NodeInfo::of).unwrap_or_default();
            admit(&self.gate, &node, &self.tx).await?;
            self.node = node;
            if !self.node.id.is_empty() {
                tracing::info!(node = %self.node.id, "Envoy connected");
                self.registry.update(&self.node.id, |s| s.connected = true);
            }
        }
        let ty = req.type_url.clone();
        let state = self.types.entry(ty.clone()).or_default();
        state.names = req.resource_names.clone();
        if let Some(err) = &req.error_detail {
            tracing::warn!(
                node = %self.node.id, type_url = %ty, rejected_nonce = %req.response_nonce,
                kept_version = %req.version_info, "NACK: {}", err.message
            );
            let msg = format!("{ty}: {}", err.message);
            self.registry
                .update(&self.node.id, |s| s.last_nack = Some(msg));
            return Ok(());
        }
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.nonce {
                // An answer to an older response; the newer one is still pending.
                return Ok(());
            }
            tracing::debug!(node = %self.node.id, type_url = %ty, version = %req.version_info, "ACK");
            let version = req.version_info.clone();
            self.registry.update(&self.node.id, |s| {
                s.acked.insert(short_type(&ty).to_string(), version);
            });
            // A new subscription set (e.g. the extension configs a new listener
            // names) needs an answer too, even at the current version.
            let current = self.snapshots.borrow().version.clone();
            if req.version_info == current && state.names == state.sent_names {
                return Ok(());
            }
        }
        self.push(&ty).await
    }

    async fn push_all(&mut self) -> Result<(), ()> {
        for ty in PUSH_ORDER {
            if self.types.contains_key(ty) {
                self.push(ty).await?;
            }
        }
        Ok(())
    }

    async fn push(&mut self, ty: &str) -> Result<(), ()> {
        let snapshot = self.snapshots.borrow().clone();
        self.nonce += 1;
        let nonce = self.nonce.to_string();
        let state = self.types.entry(ty.to_string()).or_default();
        let resources: Vec<Any> = snapshot
            .resources_for(ty, &self.node)
            .iter()
            .filter(|(name, _)| {
                state.names.is_empty() || state.names.iter().any(|n| n == name || n == "*")
            })
            .map(|(_, a)| a.clone())
            .collect();
        state.nonce = nonce.clone();
        state.sent = snapshot.version.clone();
        state.sent_names = state.names.clone();
        tracing::debug!(node = %self.node.id, type_url = %ty, version = %snapshot.version, count = resources.len(), "push");
        let response = DiscoveryResponse {
            version_info: snapshot.version.clone(),
            resources,
            type_url: ty.to_string(),
            nonce,
            ..Default::default()
        };
        self.tx.send(Ok(response)).await.map_err(|_| ())
    }
}

/// Checks the first request's node against the stream's certificate; a
/// refusal ends the stream with `PERMISSION_DENIED` and is logged.
pub(crate) async fn admit<T>(
    gate: &Gate,
    node: &NodeInfo,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Result<(), ()> {
    match gate.check(&node.id) {
        Ok(()) => {
            if matches!(gate, Gate::Certificate { .. }) && node.sds_dir.is_none() {
                tracing::warn!(
                    node = %node.id,
                    "no `{}` in the node metadata: this Envoy gets no fleet link (its bootstrap predates TLS flags?)",
                    crate::bootstrap::SDS_DIR_METADATA
                );
            }
            Ok(())
        }
        Err(why) => {
            tracing::warn!(node = %node.id, "xDS stream refused: {why}");
            let _ = tx.send(Err(Status::permission_denied(why))).await;
            Err(())
        }
    }
}

fn short_type(ty: &str) -> &str {
    ty.rsplit('.').next().unwrap_or(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn each_node_gets_its_own_listener_and_shares_the_rest() {
        let text = "providers:\n  - {name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1'}\nroutes:\n  - {model: chat, chain: [a/m, a/n]}\n";
        let mut cfg =
            crate::config::parse(text, "t.yaml", std::path::Path::new("/"), &|_| None).unwrap();
        cfg.fleet = Some(crate::config::FleetEndpoint {
            host: "127.0.0.1".into(),
            port: 9,
            tls: false,
        });
        let s = Snapshot::from_config(&cfg, 1);
        assert_eq!(s.targets, ["a/m", "a/n"].map(String::from).into());
        let info = |node: &str| NodeInfo {
            id: node.to_string(),
            sds_dir: None,
            xds_cluster: None,
        };
        let listener = |node: &str| {
            s.resources_for(type_url::LISTENER, &info(node))[0]
                .1
                .value
                .clone()
        };
        assert!(contains(&listener("envoy-7"), r#""node":"envoy-7""#));
        assert!(!contains(&listener("envoy-8"), "envoy-7"));
        assert!(
            !contains(&listener(""), r#""node""#),
            "the template names no node"
        );
        assert!(matches!(
            s.resources_for(type_url::CLUSTER, &info("envoy-7")),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn with_tls_each_node_gets_a_fleet_cluster_with_its_own_secrets() {
        let text = "providers:\n  - {name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1'}\nroutes:\n  - {model: chat, chain: [a/m]}\n";
        let mut cfg =
            crate::config::parse(text, "t.yaml", std::path::Path::new("/"), &|_| None).unwrap();
        cfg.fleet = Some(crate::config::FleetEndpoint {
            host: "cp.example".into(),
            port: 18001,
            tls: true,
        });
        let s = Snapshot::from_config(&cfg, 1);
        let with = NodeInfo {
            id: "e1".into(),
            sds_dir: Some("/etc/envoy".into()),
            xds_cluster: None,
        };
        let clusters = s.resources_for(type_url::CLUSTER, &with);
        let fleet = clusters
            .iter()
            .find(|(n, _)| n == resources::FLEET_CLUSTER)
            .unwrap();
        assert!(contains(
            &fleet.1.value,
            "/etc/envoy/switchyard-client.sds.yaml"
        ));
        assert!(contains(
            &fleet.1.value,
            "/etc/envoy/switchyard-ca.sds.yaml"
        ));
        assert!(contains(&fleet.1.value, "cp.example"));
        let listener = &s.resources_for(type_url::LISTENER, &with)[0].1.value;
        assert!(contains(listener, resources::FLEET_CLUSTER));
        // Without its SDS directory a node cannot authenticate its reports: no link.
        let without = NodeInfo {
            id: "e2".into(),
            sds_dir: None,
            xds_cluster: None,
        };
        assert!(
            s.resources_for(type_url::CLUSTER, &without)
                .iter()
                .all(|(n, _)| n != resources::FLEET_CLUSTER)
        );
        let listener = &s.resources_for(type_url::LISTENER, &without)[0].1.value;
        assert!(!contains(listener, resources::FLEET_CLUSTER));
    }

    #[test]
    fn the_fleet_stream_goes_through_the_cluster_the_bootstrap_names() {
        let text = "providers:\n  - {name: a, dialect: openai, base_url: 'http://127.0.0.1:1/v1'}\nroutes:\n  - {model: chat, chain: [a/m]}\n";
        let mut cfg =
            crate::config::parse(text, "t.yaml", std::path::Path::new("/"), &|_| None).unwrap();
        assert_eq!(cfg.fleet_transport, Transport::Grpc, "the default");
        cfg.fleet = Some(crate::config::FleetEndpoint {
            host: "127.0.0.1".into(),
            port: 9,
            tls: false,
        });
        let s = Snapshot::from_config(&cfg, 1);
        let link = |cluster: Option<&str>| {
            let node = NodeInfo {
                id: "e1".into(),
                sds_dir: None,
                xds_cluster: cluster.map(String::from),
            };
            let listener = s.resources_for(type_url::LISTENER, &node)[0]
                .1
                .value
                .clone();
            (
                contains(&listener, r#""transport":"grpc""#),
                contains(&listener, r#""cluster":"switchyard_xds""#),
                contains(&listener, r#""cluster":"ads_to_switchyard""#),
                contains(&listener, resources::FLEET_CLUSTER),
            )
        };
        // `switchyard bootstrap`'s node names `switchyard_xds`.
        assert_eq!(link(Some("switchyard_xds")), (true, true, false, false));
        // A bootstrap of its own naming another cluster: that one.
        assert_eq!(link(Some("ads_to_switchyard")), (true, false, true, false));
        // A bootstrap that does not say: the HTTP exchange.
        assert_eq!(link(None), (false, false, false, true));
    }

    #[test]
    fn node_metadata_is_taken_only_when_well_formed() {
        use envoy_types::pb::envoy::config::core::v3::Node;
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let node = |pairs: &[(&str, &str)]| Node {
            id: "e1".into(),
            metadata: Some(Struct {
                fields: pairs
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            Value {
                                kind: Some(Kind::StringValue(v.to_string())),
                            },
                        )
                    })
                    .collect(),
            }),
            ..Node::default()
        };
        let cluster = crate::bootstrap::XDS_CLUSTER_METADATA;
        let sds = crate::bootstrap::SDS_DIR_METADATA;
        let ok = NodeInfo::of(&node(&[
            (cluster, "ads_to-switchyard.cp:18000"),
            (sds, "/etc/envoy"),
        ]));
        assert_eq!(
            ok.xds_cluster.as_deref(),
            Some("ads_to-switchyard.cp:18000")
        );
        assert_eq!(ok.sds_dir.as_deref(), Some("/etc/envoy"));
        // A cluster name with a space or a control byte, an empty or an overlong
        // one, a relative or control-laden SDS directory: ignored (the node
        // then polls over HTTP, without the TLS fleet cluster).
        let long = "c".repeat(129);
        for bad in ["a b", "a\nb", "", long.as_str()] {
            assert_eq!(
                NodeInfo::of(&node(&[(cluster, bad)])).xds_cluster,
                None,
                "{bad:?}"
            );
        }
        for bad in ["etc/envoy", "/etc/\nenvoy"] {
            assert_eq!(NodeInfo::of(&node(&[(sds, bad)])).sds_dir, None, "{bad:?}");
        }
    }

    #[test]
    fn gates_check_the_node_against_the_certificate() {
        let policy = crate::tls::NodePolicy::new(&["gw=gw-*"]).unwrap();
        let peer = |cn: &str| {
            Some(Arc::new(crate::tls::Peer {
                common_names: vec![cn.to_string()],
                ..Default::default()
            }))
        };
        let gate = |p| Gate::Certificate {
            peer: p,
            policy: policy.clone(),
        };
        assert!(Gate::Open.check("anyone").is_ok());
        assert!(gate(peer("e1")).check("e1").is_ok());
        assert!(gate(peer("gw")).check("gw-abc").is_ok());
        assert!(gate(peer("e1")).check("e2").is_err());
        assert!(gate(peer("e1")).check("").is_err());
        assert!(gate(None).check("e1").is_err());
    }
}

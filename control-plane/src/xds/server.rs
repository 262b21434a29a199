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

/// Order in which resource types are pushed: clusters before the listener that
/// routes to them, the listener before its route.
const PUSH_ORDER: [&str; 3] = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE];

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
    /// The config, for each node's own listener.
    config: Option<Config>,
}

impl Snapshot {
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
            config: Some(cfg.clone()),
        }
    }

    /// The resources of type `ty` for Envoy `node`: its own listener (the
    /// planner's fleet link names the node, so its reports say who sent them),
    /// everything else shared.
    pub fn resources_for(&self, ty: &str, node: &str) -> Cow<'_, [(String, Any)]> {
        if ty == type_url::LISTENER
            && !node.is_empty()
            && let Some(cfg) = &self.config
        {
            return Cow::Owned(vec![(
                resources::LISTENER_NAME.to_string(),
                resources::any(&resources::listener(cfg, node)),
            )]);
        }
        Cow::Borrowed(
            self.resources
                .get(ty)
                .map(Vec::as_slice)
                .unwrap_or_default(),
        )
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
}

/// Per-node status, shared by all sessions.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<String, NodeStatus>>>);

impl Registry {
    fn update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        if let Ok(mut m) = self.0.lock() {
            f(m.entry(node.to_string()).or_default());
        }
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

    /// Whether `node` ever opened an xDS stream to this control plane.
    pub fn knows(&self, node: &str) -> bool {
        self.0.lock().is_ok_and(|m| m.contains_key(node))
    }

    /// A copy of every node's status.
    pub fn nodes(&self) -> BTreeMap<String, NodeStatus> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The ADS service.
#[derive(Clone, Debug)]
pub struct Ads {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    registry: Registry,
}

impl Ads {
    /// A service serving the snapshots published on `snapshots`.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, registry: Registry) -> Self {
        Ads {
            snapshots,
            registry,
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
            node: String::new(),
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
        let session = super::delta::DeltaSession::new(
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
}

struct Session {
    node: String,
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
                        tracing::info!(node = %self.node, "xDS stream closed: {e}");
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
        if !self.node.is_empty() {
            tracing::info!(node = %self.node, "Envoy disconnected");
            self.registry.update(&self.node, |s| s.connected = false);
        }
    }

    async fn on_request(&mut self, req: DiscoveryRequest) -> Result<(), ()> {
        if self.node.is_empty()
            && let Some(node) = &req.node
        {
            self.node = node.id.clone();
            tracing::info!(node = %self.node, "Envoy connected");
            self.registry.update(&self.node, |s| s.connected = true);
        }
        let ty = req.type_url.clone();
        let state = self.types.entry(ty.clone()).or_default();
        state.names = req.resource_names.clone();
        if let Some(err) = &req.error_detail {
            tracing::warn!(
                node = %self.node, type_url = %ty, rejected_nonce = %req.response_nonce,
                kept_version = %req.version_info, "NACK: {}", err.message
            );
            let msg = format!("{ty}: {}", err.message);
            self.registry
                .update(&self.node, |s| s.last_nack = Some(msg));
            return Ok(());
        }
        if !req.response_nonce.is_empty() {
            if req.response_nonce != state.nonce {
                // An answer to an older response; the newer one is still pending.
                return Ok(());
            }
            tracing::debug!(node = %self.node, type_url = %ty, version = %req.version_info, "ACK");
            let version = req.version_info.clone();
            self.registry.update(&self.node, |s| {
                s.acked.insert(short_type(&ty).to_string(), version);
            });
            // A new subscription set (e.g. a new route name) needs an answer too.
            let current = self.snapshots.borrow().version.clone();
            if req.version_info == current {
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
        tracing::debug!(node = %self.node, type_url = %ty, version = %snapshot.version, count = resources.len(), "push");
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
        cfg.fleet_addr = Some("127.0.0.1:9".parse().unwrap());
        let s = Snapshot::from_config(&cfg, 1);
        assert_eq!(s.targets, ["a/m", "a/n"].map(String::from).into());
        let listener = |node: &str| s.resources_for(type_url::LISTENER, node)[0].1.value.clone();
        assert!(contains(&listener("envoy-7"), r#""node":"envoy-7""#));
        assert!(!contains(&listener("envoy-8"), "envoy-7"));
        assert!(
            !contains(&listener(""), r#""node""#),
            "the template names no node"
        );
        assert!(matches!(
            s.resources_for(type_url::CLUSTER, "envoy-7"),
            Cow::Borrowed(_)
        ));
    }
}

//! Incremental ("delta") ADS: per resource type, the names an Envoy subscribed to
//! and the version of each resource it has; on a new snapshot only what changed
//! is sent, and what disappeared is named in `removed_resources`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::resources::type_url;
use super::server::{Registry, Snapshot};
use crate::config::fnv1a;

const PUSH_ORDER: [&str; 4] = [
    type_url::CLUSTER,
    type_url::LISTENER,
    type_url::EXTENSION_CONFIG,
    type_url::ROUTE,
];

/// Per-type state of one delta stream.
#[derive(Debug, Default)]
struct TypeState {
    /// Wildcard subscription (CDS/LDS) or explicit names (RDS).
    wildcard: bool,
    names: HashSet<String>,
    /// Resource name → version the Envoy has (as far as we know).
    has: HashMap<String, String>,
    /// Nonce of the last response sent, and the snapshot version it carried.
    nonce: String,
    sent_version: String,
}

/// One Envoy's delta stream.
pub struct DeltaSession {
    gate: super::server::Gate,
    pub(crate) node: super::server::NodeInfo,
    pub(crate) inbound: Streaming<DeltaDiscoveryRequest>,
    pub(crate) tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    pub(crate) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(crate) registry: Registry,
    types: HashMap<String, TypeState>,
    nonce: u64,
}

fn resource_version(a: &envoy_types::pb::google::protobuf::Any) -> String {
    format!("{:016x}", fnv1a(&a.value))
}

/// What to send for one type: resources the Envoy lacks or has in another version,
/// and names it has that are gone. Updates `state.has` to what it will have.
fn diff(
    state: &mut TypeState,
    snapshot: &[(String, envoy_types::pb::google::protobuf::Any)],
) -> (Vec<Resource>, Vec<String>) {
    let mut resources = Vec::new();
    let mut current = HashSet::new();
    for (name, any) in snapshot {
        if !(state.wildcard || state.names.contains(name)) {
            continue;
        }
        current.insert(name.clone());
        let version = resource_version(any);
        if state.has.get(name) != Some(&version) {
            resources.push(Resource {
                name: name.clone(),
                version,
                resource: Some(any.clone()),
                ..Default::default()
            });
        }
    }
    let removed: Vec<String> = state
        .has
        .keys()
        .filter(|n| !current.contains(*n))
        .cloned()
        .collect();
    for r in &resources {
        state.has.insert(r.name.clone(), r.version.clone());
    }
    for n in &removed {
        state.has.remove(n);
    }
    (resources, removed)
}

impl DeltaSession {
    /// A session for a new stream.
    pub fn new(
        gate: super::server::Gate,
        inbound: Streaming<DeltaDiscoveryRequest>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        registry: Registry,
    ) -> Self {
        DeltaSession {
            gate,
            node: super::server::NodeInfo::default(),
            inbound,
            tx,
            snapshots,
            registry,
            types: HashMap::new(),
            nonce: 0,
        }
    }

    /// Serves the stream until it ends.
    pub async fn run(mut self) {
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
                        tracing::info!(node = %self.node.id, "delta xDS stream closed: {e}");
                        break;
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    for ty in PUSH_ORDER {
                        if self.types.contains_key(ty) && self.push(ty).await.is_err() {
                            return self.disconnected();
                        }
                    }
                }
            }
        }
        self.disconnected();
    }

    fn disconnected(&self) {
        if !self.node.id.is_empty() {
            tracing::info!(node = %self.node.id, "Envoy disconnected (delta)");
            self.registry.set_connected(&self.node.id, false);
        }
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        if self.node.id.is_empty() {
            let node = req
                .node
                .as_ref()
                .map(super::server::NodeInfo::of)
                .unwrap_or_default();
            super::server::admit(&self.gate, &node, &self.tx).await?;
            self.node = node;
            if !self.node.id.is_empty() {
                tracing::info!(node = %self.node.id, "Envoy connected (delta xDS)");
                self.registry.set_connected(&self.node.id, true);
            }
        }
        let ty = req.type_url.clone();
        let first = !self.types.contains_key(&ty);
        let state = self.types.entry(ty.clone()).or_default();
        if first {
            // An empty first subscription is a wildcard one; a reconnecting Envoy
            // tells what it already has.
            state.wildcard = req.resource_names_subscribe.is_empty()
                || req.resource_names_subscribe.iter().any(|n| n == "*");
            state.has = req.initial_resource_versions.clone().into_iter().collect();
        }
        for n in &req.resource_names_subscribe {
            if n == "*" {
                state.wildcard = true;
            } else {
                state.names.insert(n.clone());
            }
        }
        for n in &req.resource_names_unsubscribe {
            if n == "*" {
                state.wildcard = false;
            }
            state.names.remove(n);
            state.has.remove(n);
        }
        if let Some(err) = &req.error_detail {
            tracing::warn!(node = %self.node.id, type_url = %ty, rejected_nonce = %req.response_nonce, "NACK: {}", err.message);
            let msg = format!("{ty}: {}", err.message);
            // What was rejected is not what the Envoy has: forget it so the next
            // snapshot is sent in full for those names.
            if req.response_nonce == state.nonce {
                state.has.clear();
            }
            self.registry.set_nack(&self.node.id, msg);
            return Ok(());
        }
        if !req.response_nonce.is_empty() {
            if req.response_nonce == state.nonce {
                let version = state.sent_version.clone();
                self.registry.set_acked(&self.node.id, &ty, version);
            }
            // Subscription changes ride on ACKs too.
            if req.resource_names_subscribe.is_empty() && req.resource_names_unsubscribe.is_empty()
            {
                return Ok(());
            }
        }
        self.push(&ty).await
    }

    async fn push(&mut self, ty: &str) -> Result<(), ()> {
        let snapshot = self.snapshots.borrow().clone();
        let state = self.types.entry(ty.to_string()).or_default();
        let (resources, removed) = diff(state, &snapshot.resources_for(ty, &self.node));
        if resources.is_empty() && removed.is_empty() && !state.nonce.is_empty() {
            return Ok(());
        }
        self.nonce += 1;
        state.nonce = self.nonce.to_string();
        state.sent_version = snapshot.version.clone();
        tracing::debug!(node = %self.node.id, type_url = %ty, changed = resources.len(), removed = removed.len(), "delta push");
        let response = DeltaDiscoveryResponse {
            system_version_info: snapshot.version.clone(),
            resources,
            type_url: ty.to_string(),
            removed_resources: removed,
            nonce: state.nonce.clone(),
            ..Default::default()
        };
        self.tx.send(Ok(response)).await.map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn any(v: &[u8]) -> Any {
        Any {
            type_url: type_url::CLUSTER.to_string(),
            value: v.to_vec(),
        }
    }

    #[test]
    fn only_changes_and_removals_are_sent() {
        let mut st = TypeState {
            wildcard: true,
            ..TypeState::default()
        };
        let v1 = vec![
            ("a".to_string(), any(b"1")),
            ("b".to_string(), any(b"1")),
            ("c".to_string(), any(b"1")),
        ];
        let (sent, removed) = diff(&mut st, &v1);
        assert_eq!((sent.len(), removed.len()), (3, 0));
        let v2 = vec![("a".to_string(), any(b"1")), ("b".to_string(), any(b"2"))];
        let (sent, removed) = diff(&mut st, &v2);
        assert_eq!(
            sent.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(removed, vec!["c".to_string()]);
        assert_eq!(
            diff(&mut st, &v2),
            (vec![], vec![]),
            "nothing changed, nothing sent"
        );
        // Explicit subscriptions (RDS) only get what they asked for.
        let mut named = TypeState {
            names: ["b".to_string()].into_iter().collect(),
            ..TypeState::default()
        };
        let (sent, _) = diff(&mut named, &v2);
        assert_eq!(
            sent.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["b"]
        );
    }

    #[test]
    fn versions_follow_content() {
        assert_eq!(resource_version(&any(b"x")), resource_version(&any(b"x")));
        assert_ne!(resource_version(&any(b"x")), resource_version(&any(b"y")));
    }
}

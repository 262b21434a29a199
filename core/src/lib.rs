//! Code shared by the Switchyard filter (wasm32) and control plane (native).
//!
//! Nothing here may depend on an async runtime, sockets or the clock: the filter
//! passes time in where it is needed.

pub mod circuit;
pub mod config;
pub mod cooldown;
pub mod cost;
pub mod dialect;
pub mod error;
pub mod eventstream;
pub mod failure;
pub mod fleet;
pub mod governance;
pub mod headers;
pub mod inbound;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod request;
pub mod sigv4;
pub mod sse;

/// Header (and filter-state key suffix) names that form the contract between the
/// planner, the route and the adapter.
pub mod wire {
    /// Filter state the planner sets (as `wasm.<key>`) for the route's matcher: the
    /// cluster of plan slot `k` (1-based) is in `sy_slot<k>`.
    pub const SLOT_STATE_PREFIX: &str = "sy_slot";
    /// Filter state naming the chain cluster of a hedged request (the route's
    /// matcher sends such requests there instead of to the slots).
    pub const CHAIN_STATE: &str = "sy_chain";
    /// Name of the composite cluster that walks route `alias`'s chain.
    pub fn chain_cluster(alias: &str) -> String {
        format!("sy_chain_{alias}")
    }
    /// Response headers that tell the client what happened.
    pub const PROVIDER_HEADER: &str = "x-switchyard-provider";
    /// Model that served the response (the provider's model name).
    pub const MODEL_HEADER: &str = "x-switchyard-model";
    /// Number of attempts made, the serving one included.
    pub const ATTEMPTS_HEADER: &str = "x-switchyard-attempts";
    /// 1-based position in the plan of the target that served the response.
    pub const CHAIN_POSITION_HEADER: &str = "x-switchyard-chain-position";
    /// Name of the Envoy cluster the control plane generates for a provider.
    pub fn provider_cluster(provider: &str) -> String {
        format!("sy_provider_{provider}")
    }
}

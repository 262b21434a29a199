//! The configuration the control plane sends to every filter (JSON inside the
//! Wasm plugin's `configuration`). The user-facing YAML lives in the control plane;
//! this is its checked, resolved form.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dialect::Dialect;
use crate::policy::Policy;

/// Which half of the filter a plugin instance plays (ARCHITECTURE.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Downstream HTTP filter: validates the request and plans the chain.
    Planner,
    /// Router upstream filter: rewrites each attempt for its provider.
    Adapter,
}

/// One provider as the filter sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Dialect the provider speaks.
    pub dialect: Dialect,
    /// Envoy cluster that reaches it.
    pub cluster: String,
    /// `:authority` to send (the provider's host, with port when not default).
    pub authority: String,
    /// Path prefix before the dialect's endpoint, e.g. `/v1`.
    pub base_path: String,
    /// Azure OpenAI `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Credentials to inject, in rotation order; only in the adapter's config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// How many credentials the provider has: a plan may try each before leaving it.
    #[serde(default = "one")]
    pub key_count: usize,
    /// AWS SigV4 signing (Bedrock without an API key); only in the adapter's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsAuth>,
    /// Headers sent with every request (OpenAI organization/project, others the
    /// configuration names); only in the adapter's config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Client request headers (lower-case names) forwarded to this provider only,
    /// e.g. `anthropic-beta` for an Anthropic provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
}

/// What SigV4 signing needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAuth {
    /// Region the endpoint is in, e.g. `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AwsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key id names the credential; the secrets stay out of logs.
        f.debug_struct("AwsAuth")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn one() -> usize {
    1
}

/// The whole filter configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Version of the control-plane config this was generated from.
    pub version: String,
    /// Role of the plugin instance that receives this config.
    pub role: Role,
    /// Providers by name.
    pub providers: BTreeMap<String, Provider>,
    /// Model aliases clients may name in `model`, each with its chain and policy.
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    /// Policy for requests that name a `provider/model` directly.
    #[serde(default)]
    pub default_policy: Policy,
    /// Largest request body accepted (bytes); larger requests get 413.
    pub max_request_bytes: usize,
    /// Most targets one request's plan may hold (= slots in the generated route).
    pub max_attempts: usize,
    /// Active health checks of every provider (adapter only); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Prices per target (`provider/model`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, Price>,
    /// Provider credentials come through the fleet exchange (and are not in
    /// this config): until they have, the planner answers 503.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credentials_from_fleet: bool,
    /// What the filter tells observers through filter state: span facts
    /// (`tracing:` configured) and the decision record (`decision_log:`). Off,
    /// nothing is written: no cost on the request path.
    #[serde(default, skip_serializing_if = "Observers::is_off")]
    pub observers: Observers,
    /// What is known of each target's model (`provider/model`): its context
    /// window, owner and creation time (`/v1/models`, context-aware planning).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, ModelInfo>,
    /// Circuit breakers per target; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<crate::circuit::Settings>,
    /// Exchange of outcomes and fleet state with the control plane (planner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Link>,
    /// Client request headers (lower-case names) forwarded to every provider,
    /// beyond the few every request keeps (see [`crate::headers`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_headers: Vec<String>,
    /// Bound on same-target retries (and key rotation) across the requests in
    /// flight; fail-over to another target is never limited by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Virtual keys, budgets and limits: present when the control plane holds
    /// keys (or the config requires them); every request then needs a key. The
    /// keys themselves come through the fleet exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<Governance>,
}

/// Where and how often a filter exchanges state with the control plane (the
/// fleet exchange, [`crate::fleet`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Envoy cluster that reaches the control plane: its HTTP endpoint (the
    /// status port) for [`Transport::Http`], the bootstrap's xDS cluster
    /// (HTTP/2) for [`Transport::Grpc`].
    pub cluster: String,
    /// Milliseconds between exchanges (with gRPC: between looks for news to
    /// report).
    pub interval_ms: u64,
    /// How reports go up and state comes down.
    #[serde(default, skip_serializing_if = "Transport::is_http")]
    pub transport: Transport,
    /// Node id of the Envoy this config was sent to: the control plane stamps
    /// it from the node's xDS stream (the native module cannot read it, and
    /// proxy-wasm only as `xds.node.id`); the filter reports under it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// The fleet exchange's transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Every worker POSTs its report to `/fleet/v1/exchange` each interval and
    /// takes the answer (the fallback).
    #[default]
    Http,
    /// One worker per Envoy holds a gRPC stream
    /// (`switchyard.fleet.v1.Fleet/Stream`): reports go up with news, the
    /// control plane pushes state when it changes.
    Grpc,
}

impl Transport {
    /// Whether this is the default (HTTP).
    pub fn is_http(&self) -> bool {
        *self == Transport::Http
    }
}

/// Which observers read the filter's facts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observers {
    /// Envoy's tracer (span facts).
    #[serde(default)]
    pub spans: bool,
    /// The decision log (one record per request).
    #[serde(default)]
    pub decisions: bool,
}

impl Observers {
    fn is_off(&self) -> bool {
        !self.spans && !self.decisions
    }
}

/// A target's model, as the operator describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// Tokens the model takes in one request, prompt and answer together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Who makes the model (`/v1/models` `owned_by`; the provider when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// When the model was released, Unix seconds (`/v1/models` `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// What filters need to know about governance beyond the key table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// Completion tokens assumed, at admission, for a request that sets no
    /// `max_tokens` (the estimate is settled with the real usage at the end).
    pub completion_estimate: u64,
}

/// Same-target retries may be at most `percent` % of the requests in flight on
/// one Envoy (or `min_concurrency`, whichever is more).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Share of the requests in flight.
    pub percent: f64,
    /// Retries always allowed at once, whatever the share.
    pub min_concurrency: u32,
}

impl RetryBudget {
    /// How many more same-target retry slots a request may take, when `active`
    /// requests are in flight (this one included) holding `granted` slots, and it
    /// wants `wanted`.
    pub fn grant(&self, active: u64, granted: u64, wanted: u64) -> u64 {
        let cap = ((active as f64) * self.percent / 100.0).floor() as u64;
        let cap = cap.max(u64::from(self.min_concurrency));
        wanted.min(cap.saturating_sub(granted))
    }
}

/// One place an attempt can go: a provider and the model name it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Provider name (a key of [`FilterConfig::providers`]).
    pub provider: String,
    /// Model name as the provider spells it.
    pub model: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl Target {
    /// Parses `provider/model` (the model may itself contain `/`).
    pub fn parse(s: &str) -> Option<Target> {
        let (provider, model) = s.split_once('/')?;
        if provider.is_empty() || model.is_empty() {
            return None;
        }
        Some(Target {
            provider: provider.to_string(),
            model: model.to_string(),
        })
    }
}

/// A model alias: its chain of targets and its fail-over policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Targets in order.
    pub chain: Vec<Target>,
    /// Fail-over policy.
    #[serde(default)]
    pub policy: Policy,
    /// Weights, one per chain entry: the first target of each request is drawn by
    /// weight, the others follow by descending weight. Empty: the chain's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u32>,
    /// Envoy cluster that walks this chain attempt by attempt, hedges included
    /// (generated when the policy hedges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_cluster: Option<String>,
    /// Cost ceiling: no attempt of a request planned from this route goes to a
    /// target priced above it (or without a price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_price: Option<Price>,
}

/// Active health checks: each provider's model list is fetched every
/// `interval_ms` (by one worker); `unhealthy_after` failures in a row mark it
/// unhealthy (its targets move to the back of plans), `healthy_after` successes
/// mark it healthy again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Time between checks of one provider.
    pub interval_ms: u64,
    /// Time a check may take.
    pub timeout_ms: u64,
    /// Failed checks in a row that mark a provider unhealthy.
    pub unhealthy_after: u32,
    /// Passed checks in a row that mark it healthy again.
    pub healthy_after: u32,
}

/// A target's price in currency units per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million input (prompt) tokens.
    pub input: f64,
    /// Per million output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// Whether this price is within `ceiling` on both counts.
    pub fn within(&self, ceiling: &Price) -> bool {
        self.input <= ceiling.input && self.output <= ceiling.output
    }
}

impl Route {
    /// The chain for one request; `draw` is uniform in [0, 1).
    pub fn ordered(&self, draw: f64) -> Vec<Target> {
        self.ordered_with(draw, |_| 1.0)
    }

    /// Like [`Route::ordered`], each configured weight scaled by `factor(target)`
    /// (the fleet's effective-weight factor, 0..=1).
    pub fn ordered_with(&self, draw: f64, factor: impl Fn(&Target) -> f64) -> Vec<Target> {
        if self.weights.len() != self.chain.len() {
            return self.chain.clone();
        }
        let weights: Vec<f64> = self
            .weights
            .iter()
            .zip(&self.chain)
            .map(|(w, t)| f64::from(*w) * factor(t).clamp(0.0, 1.0))
            .collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return self.chain.clone();
        }
        let pick = draw.clamp(0.0, 1.0) * total;
        let mut acc = 0.0;
        let first = weights
            .iter()
            .position(|w| {
                acc += w;
                pick < acc
            })
            .unwrap_or(self.chain.len() - 1);
        let mut rest: Vec<usize> = (0..self.chain.len()).filter(|i| *i != first).collect();
        rest.sort_by(|a, b| weights[*b].total_cmp(&weights[*a]));
        std::iter::once(first)
            .chain(rest)
            .map(|i| self.chain[i].clone())
            .collect()
    }
}

/// Why a filter config was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON did not parse into [`FilterConfig`].
    #[error("filter config is not valid JSON for this filter: {0}")]
    Parse(#[from] serde_json::Error),
    /// A route names a provider that is not configured.
    #[error("route `{route}` names unknown provider `{provider}`")]
    UnknownProvider {
        /// The route alias.
        route: String,
        /// The missing provider.
        provider: String,
    },
    /// A limit is out of range.
    #[error("{0}")]
    Limit(String),
}

/// Most targets (slots) one plan may hold: the generated route has a cluster
/// matcher branch per slot.
pub const MAX_ATTEMPTS: usize = 16;

/// Checks `max_attempts` (the config file's `limits.max_attempts` and the filter
/// config's, one rule).
pub fn check_max_attempts(n: usize) -> Result<(), String> {
    if (1..=MAX_ATTEMPTS).contains(&n) {
        Ok(())
    } else {
        Err(format!("expected 1..={MAX_ATTEMPTS}, got {n}"))
    }
}

impl FilterConfig {
    /// Whether `t` is a target of a configured route. Only those targets keep
    /// shared state (circuits, cool-downs, fleet counters): a `provider/model` a
    /// client names directly can be anything, so its outcomes must neither grow
    /// state nor move traffic for everyone else.
    pub fn is_configured(&self, t: &Target) -> bool {
        self.routes.values().any(|r| r.chain.contains(t))
    }

    /// The configured context window of `t`, if any.
    pub fn context_window(&self, t: &Target) -> Option<u64> {
        self.models
            .get(&t.to_string())
            .and_then(|m| m.context_window)
    }

    /// Parses and checks a config; the filter keeps its last good config when this fails.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let cfg: FilterConfig = serde_json::from_slice(bytes)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_max_attempts(self.max_attempts)
            .map_err(|e| ConfigError::Limit(format!("max_attempts: {e}")))?;
        if self.max_request_bytes == 0 {
            return Err(ConfigError::Limit("max_request_bytes must be > 0".into()));
        }
        for (route, r) in &self.routes {
            for t in &r.chain {
                if !self.providers.contains_key(&t.provider) {
                    return Err(ConfigError::UnknownProvider {
                        route: route.clone(),
                        provider: t.provider.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

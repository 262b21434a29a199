//! `routes:` (model aliases with their chains, tiers, weights, price ceilings and
//! policies), `policy:` (for direct targets) and `prices:`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use switchyard_core::config::{ModelInfo, Price, Route, Target};
use switchyard_core::policy::Policy;

use super::providers::Provider;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) model: String,
    #[serde(default)]
    pub(super) chain: Vec<String>,
    /// The chain declared as tiers (same quality, then cheaper, then self-hosted):
    /// flattened in order.
    #[serde(default)]
    pub(super) tiers: Option<Vec<Vec<String>>>,
    /// Cost ceiling for every attempt of this route's requests.
    #[serde(default)]
    pub(super) max_price: Option<Price>,
    #[serde(default)]
    pub(super) policy: Policy,
    /// One weight per chain entry: the first target is drawn by weight.
    #[serde(default)]
    pub(super) weights: Option<Vec<u32>>,
}

/// Flattens routes declared with `tiers` into their chain.
pub(super) fn flatten_tiers(raw: &mut [RawRoute], problems: &mut Vec<String>) {
    for (i, r) in raw.iter_mut().enumerate() {
        if let Some(tiers) = r.tiers.take() {
            if !r.chain.is_empty() {
                problems.push(format!(
                    "routes[{i}]: expected `chain` or `tiers`, not both"
                ));
            }
            r.chain = tiers.concat();
        }
    }
}

/// Checks `prices:` against the configured providers.
pub(super) fn check_prices(
    prices: &BTreeMap<String, Price>,
    providers: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (key, price) in prices {
        let known = Target::parse(key).is_some_and(|t| providers.contains(&t.provider));
        if !known {
            problems.push(format!(
                "prices.{key}: expected `provider/model` of a configured provider"
            ));
        }
        if !(price.input >= 0.0 && price.output >= 0.0) {
            problems.push(format!("prices.{key}: expected non-negative prices"));
        }
    }
}

/// Checks `models:` against the configured providers.
pub(super) fn check_models(
    models: &BTreeMap<String, ModelInfo>,
    providers: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (key, info) in models {
        if !Target::parse(key).is_some_and(|t| providers.contains(&t.provider)) {
            problems.push(format!(
                "models.{key}: expected `provider/model` of a configured provider"
            ));
        }
        if info.context_window == Some(0) {
            problems.push(format!("models.{key}.context_window: expected > 0"));
        }
    }
}

/// Checks the routes; `names` are the providers' names.
pub(super) fn check(
    raw: &[RawRoute],
    providers: &[Provider],
    names: &BTreeSet<String>,
    max_attempts: usize,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Route> {
    let mut routes = BTreeMap::new();
    for (i, r) in raw.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.model.is_empty() || r.model.contains('/') {
            problems.push(format!(
                "{at}.model: expected an alias without `/`, got `{}`",
                r.model
            ));
        }
        if r.chain.is_empty() {
            problems.push(format!(
                "{at}.chain: expected at least one `provider/model`"
            ));
        }
        if r.chain.len() > max_attempts {
            problems.push(format!(
                "{at}.chain: has {} targets, limits.max_attempts is {}",
                r.chain.len(),
                max_attempts
            ));
        }
        let mut chain = Vec::new();
        for (j, t) in r.chain.iter().enumerate() {
            match Target::parse(t) {
                Some(target) if names.contains(&target.provider) => {
                    let dialect = providers
                        .iter()
                        .find(|p: &&Provider| p.name == target.provider)
                        .map(|p| p.dialect);
                    if let Some(Err(e)) = dialect.map(|d| d.check_model(&target.model)) {
                        problems.push(format!("{at}.chain[{j}]: `{t}`: {e}"));
                    }
                    chain.push(target)
                }
                Some(target) => problems.push(format!(
                    "{at}.chain[{j}]: unknown provider `{}`",
                    target.provider
                )),
                None => problems.push(format!(
                    "{at}.chain[{j}]: expected `provider/model`, got `{t}`"
                )),
            }
        }
        check_policy(&r.policy, &format!("{at}.policy"), problems);
        let weights = r.weights.clone().unwrap_or_default();
        if r.weights.is_some()
            && (weights.len() != r.chain.len() || weights.iter().all(|w| *w == 0))
        {
            problems.push(format!(
                "{at}.weights: expected one weight per chain entry ({}), not all zero",
                r.chain.len()
            ));
        }
        if routes
            .insert(
                r.model.clone(),
                Route {
                    hedge_cluster: r
                        .policy
                        .hedge_after_ms
                        .map(|_| switchyard_core::wire::chain_cluster(&r.model)),
                    chain,
                    policy: r.policy.clone(),
                    weights,
                    max_price: r.max_price,
                },
            )
            .is_some()
        {
            problems.push(format!("{at}.model: `{}` is defined twice", r.model));
        }
    }
    routes
}

/// Checks a fail-over policy.
pub(super) fn check_policy(p: &Policy, at: &str, problems: &mut Vec<String>) {
    if p.fail_over_on
        .contains(&switchyard_core::failure::FailureClass::BadRequest)
    {
        problems.push(format!(
            "{at}.fail_over_on: `bad_request` cannot fall over: the request fails everywhere"
        ));
    }
    for (name, v) in [
        ("first_byte_timeout_ms", p.first_byte_timeout_ms),
        ("first_token_timeout_ms", p.first_token_timeout_ms),
        ("deadline_ms", p.deadline_ms),
    ] {
        if v == Some(0) {
            problems.push(format!("{at}.{name}: expected > 0"));
        }
    }
    if p.hedge_after_ms == Some(0) {
        problems.push(format!("{at}.hedge_after_ms: expected > 0"));
    }
    if let (Some(fb), Some(d)) = (p.first_byte_timeout_ms, p.deadline_ms)
        && fb > d
    {
        problems.push(format!(
            "{at}: first_byte_timeout_ms ({fb}) exceeds deadline_ms ({d})"
        ));
    }
}

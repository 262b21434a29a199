//! Planning: from a request's `model` and `fallbacks` to the ordered list of
//! targets its attempts go to.

use crate::config::{FilterConfig, Target};
use crate::policy::Policy;

/// Why no plan could be made; each becomes a 400 for the client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `model` is neither a configured route nor `provider/model` of a known provider.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    UnknownModel(String),
    /// An entry of `fallbacks` is malformed or names an unknown provider.
    #[error("fallbacks[{index}]: `{value}` is not `provider/model` of a configured provider")]
    BadFallback {
        /// Position in the array.
        index: usize,
        /// The offending value.
        value: String,
    },
    /// A `provider/model` the request names has a model id the provider's dialect
    /// does not allow.
    #[error("`{value}` is not a valid model for its provider: {reason}")]
    InvalidModel {
        /// The offending `provider/model`.
        value: String,
        /// What the id must look like.
        reason: String,
    },
    /// Every target of the plan is priced above the route's ceiling (or unpriced).
    #[error("no target of `{0}` is within its price ceiling")]
    OverCeiling(String),
    /// The plan holds more targets than the gateway has slots for.
    #[error("the plan has {len} targets; at most {max} are allowed")]
    TooLong {
        /// Targets after de-duplication.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
}

/// Builds the plan: the route's chain (or the single named target) followed by the
/// request's `fallbacks`, duplicates removed, order kept.
/// `draw` (uniform in [0, 1)) picks the first target of weighted routes.
pub fn plan(
    cfg: &FilterConfig,
    model: &str,
    fallbacks: &[&str],
    draw: f64,
) -> Result<Vec<Target>, PlanError> {
    plan_with(cfg, model, fallbacks, draw, |_| 1.0)
}

/// Like [`plan`], every route in its configured order: weights play no part
/// (every weight scaled to 0 leaves a route's chain as it is), so every request
/// of a model meets its targets in the same order (a request whose state lives
/// at one provider must find it there each time).
pub fn plan_in_order(
    cfg: &FilterConfig,
    model: &str,
    fallbacks: &[&str],
) -> Result<Vec<Target>, PlanError> {
    plan_with(cfg, model, fallbacks, 0.0, |_| 0.0)
}

/// Like [`plan`], weighted routes' weights scaled by `factor(target)`.
pub fn plan_with(
    cfg: &FilterConfig,
    model: &str,
    fallbacks: &[&str],
    draw: f64,
    factor: impl Fn(&Target) -> f64 + Copy,
) -> Result<Vec<Target>, PlanError> {
    let mut out: Vec<Target> = match cfg.routes.get(model) {
        Some(route) => route.ordered_with(draw, factor),
        None => {
            let t = Target::parse(model)
                .filter(|t| cfg.providers.contains_key(&t.provider))
                .ok_or_else(|| PlanError::UnknownModel(model.to_string()))?;
            check_direct(cfg, &t)?;
            vec![t]
        }
    };
    for (index, f) in fallbacks.iter().enumerate() {
        let extra: Vec<Target> = match cfg.routes.get(*f) {
            Some(route) => route.ordered_with(draw, factor),
            None => {
                let t = Target::parse(f)
                    .filter(|t| cfg.providers.contains_key(&t.provider))
                    .ok_or_else(|| PlanError::BadFallback {
                        index,
                        value: (*f).to_string(),
                    })?;
                check_direct(cfg, &t)?;
                vec![t]
            }
        };
        for t in extra {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    // A route's cost ceiling holds for every attempt, request fallbacks included.
    if let Some(ceiling) = cfg.routes.get(model).and_then(|r| r.max_price) {
        out.retain(|t| {
            cfg.prices
                .get(&t.to_string())
                .is_some_and(|p| p.within(&ceiling))
        });
        if out.is_empty() {
            return Err(PlanError::OverCeiling(model.to_string()));
        }
    }
    if out.len() > cfg.max_attempts {
        return Err(PlanError::TooLong {
            len: out.len(),
            max: cfg.max_attempts,
        });
    }
    Ok(out)
}

/// A target the request names itself must have a model id its provider allows.
fn check_direct(cfg: &FilterConfig, t: &Target) -> Result<(), PlanError> {
    let Some(p) = cfg.providers.get(&t.provider) else {
        return Err(PlanError::UnknownModel(t.to_string()));
    };
    p.dialect
        .check_model(&t.model)
        .map_err(|reason| PlanError::InvalidModel {
            value: t.to_string(),
            reason,
        })
}

/// Gives targets more than one slot: `attempts_per_target`, or one per key of the
/// provider, whichever is more. Every target keeps at least one slot; extra slots go
/// in plan order while `max_attempts` (and `max_extra`, the retry budget) leave room.
pub fn expand(
    cfg: &FilterConfig,
    targets: Vec<Target>,
    attempts_per_target: usize,
    max_extra: usize,
) -> Vec<Target> {
    let mut room = cfg
        .max_attempts
        .saturating_sub(targets.len())
        .min(max_extra);
    let mut out = Vec::with_capacity(cfg.max_attempts);
    for t in targets {
        let keys = cfg.providers.get(&t.provider).map_or(1, |p| p.key_count);
        let extra = attempts_per_target
            .max(keys)
            .max(1)
            .saturating_sub(1)
            .min(room);
        room -= extra;
        for _ in 0..extra {
            out.push(t.clone());
        }
        out.push(t);
    }
    out
}

/// The policy of a request: its `model` alias's, or the default for direct targets.
pub fn policy<'a>(cfg: &'a FilterConfig, model: &str) -> &'a Policy {
    cfg.routes
        .get(model)
        .map(|r| &r.policy)
        .unwrap_or(&cfg.default_policy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Provider, Role};
    use crate::dialect::Dialect;
    use std::collections::BTreeMap;

    /// A plan as `provider/model` entries, comma separated.
    fn encode(plan: &[Target]) -> String {
        plan.iter()
            .map(Target::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn cfg() -> FilterConfig {
        let p = |c: &str| Provider {
            dialect: Dialect::Openai,
            cluster: c.into(),
            authority: "h".into(),
            base_path: "/v1".into(),
            api_version: None,
            api_keys: Vec::new(),
            key_count: 1,
            aws: None,
            headers: Vec::new(),
            forward_headers: Vec::new(),
        };
        let mut providers = BTreeMap::new();
        providers.insert("a".to_string(), p("ca"));
        providers.insert("b".to_string(), p("cb"));
        let mut routes = BTreeMap::new();
        let chain = vec![
            Target::parse("a/m1").unwrap(),
            Target::parse("b/m2").unwrap(),
        ];
        let policy = Policy {
            first_byte_timeout_ms: Some(7),
            ..Policy::default()
        };
        routes.insert(
            "chat".to_string(),
            crate::config::Route {
                chain,
                policy,
                weights: Vec::new(),
                hedge_cluster: None,
                max_price: None,
            },
        );
        FilterConfig {
            version: "1".into(),
            role: Role::Planner,
            providers,
            routes,
            default_policy: Policy::default(),
            max_request_bytes: 1000,
            max_attempts: 3,
            prices: BTreeMap::new(),
            models: BTreeMap::new(),
            credentials_from_fleet: false,
            observers: crate::config::Observers::default(),
            health_check: None,
            circuit_breaker: None,
            fleet: None,
            forward_headers: Vec::new(),
            retry_budget: None,
            governance: None,
        }
    }

    #[test]
    fn route_then_fallbacks_without_duplicates() {
        let p = plan(&cfg(), "chat", &["b/m2", "a/m3"], 0.0).unwrap();
        assert_eq!(encode(&p), "a/m1,b/m2,a/m3");
    }

    #[test]
    fn expansion_per_key_and_policy_within_max() {
        let mut c = cfg();
        c.max_attempts = 5;
        c.providers.get_mut("a").unwrap().key_count = 2;
        let p = expand(&c, plan(&c, "chat", &[], 0.0).unwrap(), 1, usize::MAX);
        assert_eq!(encode(&p), "a/m1,a/m1,b/m2");
        let p = expand(&c, plan(&c, "chat", &[], 0.0).unwrap(), 3, usize::MAX);
        assert_eq!(
            encode(&p),
            "a/m1,a/m1,a/m1,b/m2,b/m2",
            "b keeps its slot; extras stop at max_attempts"
        );
        let p = expand(&c, plan(&c, "chat", &[], 0.0).unwrap(), 3, 1);
        assert_eq!(
            encode(&p),
            "a/m1,a/m1,b/m2",
            "the retry budget caps extras only"
        );
    }

    #[test]
    fn weighted_first_slot_within_three_percent_over_10000_requests() {
        let t = |s: &str| Target::parse(s).unwrap();
        let route = crate::config::Route {
            chain: vec![t("a/x"), t("b/y"), t("c/z")],
            policy: Policy::default(),
            weights: vec![20, 50, 30],
            hedge_cluster: None,
            max_price: None,
        };
        // A fixed-seed xorshift stands in for the filter's random draws.
        let mut s = 0x9E3779B97F4A7C15u64;
        let mut firsts = [0u32; 3];
        for _ in 0..10_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let draw = (s >> 11) as f64 / (1u64 << 53) as f64;
            let order = route.ordered(draw);
            assert_eq!(order.len(), 3, "every target stays in the plan");
            firsts[["a", "b", "c"]
                .iter()
                .position(|p| *p == order[0].provider)
                .unwrap()] += 1;
        }
        for (got, want) in firsts.iter().zip([2000u32, 5000, 3000]) {
            assert!(got.abs_diff(want) <= 300, "{firsts:?}");
        }
        // The rest follow by weight: b (50) first, then c (30).
        assert_eq!(encode(&route.ordered(0.0)), "a/x,b/y,c/z");
        assert_eq!(encode(&route.ordered(0.99)), "c/z,b/y,a/x");
    }

    #[test]
    fn in_order_ignores_weights() {
        let mut c = cfg();
        let route = c.routes.get_mut("chat").unwrap();
        route.weights = vec![1, 99];
        assert_eq!(encode(&plan(&c, "chat", &[], 0.5).unwrap()), "b/m2,a/m1");
        let p = plan_in_order(&c, "chat", &["a/m3"]).unwrap();
        assert_eq!(encode(&p), "a/m1,b/m2,a/m3", "the configured order");
    }

    #[test]
    fn price_ceiling_holds_for_fallbacks_too() {
        let mut c = cfg();
        c.prices.insert(
            "a/m1".into(),
            crate::config::Price {
                input: 1.0,
                output: 2.0,
            },
        );
        c.prices.insert(
            "b/m2".into(),
            crate::config::Price {
                input: 10.0,
                output: 30.0,
            },
        );
        c.prices.insert(
            "a/cheap".into(),
            crate::config::Price {
                input: 0.1,
                output: 0.2,
            },
        );
        c.routes.get_mut("chat").unwrap().max_price = Some(crate::config::Price {
            input: 2.0,
            output: 5.0,
        });
        // b/m2 (too expensive) and a/unpriced (no price) are dropped.
        assert_eq!(
            encode(&plan(&c, "chat", &["a/unpriced", "a/cheap"], 0.0).unwrap()),
            "a/m1,a/cheap"
        );
        c.prices.insert(
            "a/m1".into(),
            crate::config::Price {
                input: 3.0,
                output: 2.0,
            },
        );
        assert_eq!(
            plan(&c, "chat", &["b/m2"], 0.0),
            Err(PlanError::OverCeiling("chat".into()))
        );
    }

    #[test]
    fn policy_of_alias_or_default() {
        assert_eq!(policy(&cfg(), "chat").first_byte_timeout_ms, Some(7));
        assert_eq!(policy(&cfg(), "a/x").first_byte_timeout_ms, None);
    }

    #[test]
    fn direct_target_and_model_with_slash() {
        let p = plan(&cfg(), "b/org/model-x", &[], 0.0).unwrap();
        assert_eq!(p[0].provider, "b");
        assert_eq!(p[0].model, "org/model-x");
    }

    #[test]
    fn errors() {
        assert_eq!(
            plan(&cfg(), "gpt-9", &[], 0.0),
            Err(PlanError::UnknownModel("gpt-9".into()))
        );
        assert_eq!(
            plan(&cfg(), "a/x", &["zz/m"], 0.0),
            Err(PlanError::BadFallback {
                index: 0,
                value: "zz/m".into()
            })
        );
        assert!(matches!(
            plan(&cfg(), "chat", &["a/x", "a/y"], 0.0),
            Err(PlanError::TooLong { len: 4, max: 3 })
        ));
        assert!(Target::parse("/m").is_none() && Target::parse("a/").is_none());
        assert!(matches!(
            plan(&cfg(), "a/has space", &[], 0.0),
            Err(PlanError::InvalidModel { .. })
        ));
        assert!(matches!(
            plan(&cfg(), "a/x", &["b/../../files?x="], 0.0),
            Err(PlanError::InvalidModel { .. })
        ));
    }
}

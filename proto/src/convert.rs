//! Conversions between the fleet protocol's messages and the core's types
//! (the model both ends keep). Reports and states keep the meaning of the
//! JSON they replace; what protobuf cannot say the same way is noted where it
//! is converted (absent lists, enums a peer may not know).

use std::collections::BTreeMap;

use switchyard_core::config::{AwsAuth, Price};
use switchyard_core::failure::FailureClass;
use switchyard_core::fleet::{
    ClassCount, Credentials, DrillOutcome, Fault, FullReport, Observed, Open, Outcome, Push,
    Report, RouteOutcome, Secrets, TargetLatency, Targets, Weight,
};
use switchyard_core::governance::{
    Decision, Dim, DimReport, GovReport, GovState, Grant, KeyRecord, Limits, Reason, SubjectReport,
    Table, TeamRecord,
};

use crate::fleet::v1 as pb;

/// Why a message could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

// === reports: core -> message (the filter) ===

/// A filter's report as a message.
pub fn report(r: &FullReport) -> pb::Report {
    let FullReport { report, observed } = r;
    pb::Report {
        // Numbered by the stream that sends it.
        seq: 0,
        node: report.node.clone(),
        outcomes: report
            .outcomes
            .iter()
            .map(|o| pb::Outcome {
                target: o.target.clone(),
                ok: o.ok,
                failed: o.failed,
                latency_ms_sum: o.latency_ms_sum,
            })
            .collect(),
        gov: report.gov.as_ref().map(gov_report),
        credentials: report.credentials.clone(),
        routes: observed
            .routes
            .iter()
            .map(|r| pb::RouteOutcome {
                route: r.route.clone(),
                requests: r.requests,
                served: r.served.clone(),
                all_failed: r.all_failed,
                fallbacks: r
                    .fallbacks
                    .iter()
                    .map(|c| pb::ClassCount {
                        class: c.class.clone(),
                        n: c.n,
                    })
                    .collect(),
            })
            .collect(),
        latency: observed
            .latency
            .iter()
            .map(|l| pb::TargetLatency {
                target: l.target.clone(),
                buckets: l.buckets.clone(),
            })
            .collect(),
        drill: observed.drill.as_ref().map(|d| pb::DrillOutcome {
            id: d.id.clone(),
            injected: d.injected,
            affected: d.affected,
            rescued: d.rescued,
            rescued_ms_sum: d.rescued_ms_sum,
        }),
    }
}

fn dim(d: Dim) -> pb::Dim {
    match d {
        Dim::Requests => pb::Dim::Requests,
        Dim::Tokens => pb::Dim::Tokens,
        Dim::CostDay => pb::Dim::CostDay,
        Dim::CostMonth => pb::Dim::CostMonth,
    }
}

fn dim_of(d: i32) -> Result<Dim, Invalid> {
    match pb::Dim::try_from(d) {
        Ok(pb::Dim::Requests) => Ok(Dim::Requests),
        Ok(pb::Dim::Tokens) => Ok(Dim::Tokens),
        Ok(pb::Dim::CostDay) => Ok(Dim::CostDay),
        Ok(pb::Dim::CostMonth) => Ok(Dim::CostMonth),
        Err(_) => Err(Invalid(format!("unknown meter {d}"))),
    }
}

fn reason(r: Reason) -> pb::Reason {
    match r {
        Reason::Admitted => pb::Reason::Admitted,
        Reason::KeyMissing => pb::Reason::KeyMissing,
        Reason::KeyUnknown => pb::Reason::KeyUnknown,
        Reason::KeyRevoked => pb::Reason::KeyRevoked,
        Reason::KeyExpired => pb::Reason::KeyExpired,
        Reason::ModelNotAllowed => pb::Reason::ModelNotAllowed,
        Reason::RateLimitExceeded => pb::Reason::RateLimitExceeded,
        Reason::BudgetExceeded => pb::Reason::BudgetExceeded,
    }
}

/// A reason the core does not know (a newer filter) makes the report invalid,
/// as an unknown `reason` string does in the JSON exchange.
fn reason_of(r: i32) -> Result<Reason, Invalid> {
    match pb::Reason::try_from(r) {
        Ok(pb::Reason::Admitted) => Ok(Reason::Admitted),
        Ok(pb::Reason::KeyMissing) => Ok(Reason::KeyMissing),
        Ok(pb::Reason::KeyUnknown) => Ok(Reason::KeyUnknown),
        Ok(pb::Reason::KeyRevoked) => Ok(Reason::KeyRevoked),
        Ok(pb::Reason::KeyExpired) => Ok(Reason::KeyExpired),
        Ok(pb::Reason::ModelNotAllowed) => Ok(Reason::ModelNotAllowed),
        Ok(pb::Reason::RateLimitExceeded) => Ok(Reason::RateLimitExceeded),
        Ok(pb::Reason::BudgetExceeded) => Ok(Reason::BudgetExceeded),
        Ok(pb::Reason::Unspecified) | Err(_) => {
            Err(Invalid(format!("decision with unknown reason {r}")))
        }
    }
}

fn decision(d: &Decision) -> pb::Decision {
    pb::Decision {
        at_ms: d.at_ms,
        request_id: d.request_id.clone(),
        id_altered: d.id_altered,
        key: d.key.clone(),
        team: d.team.clone(),
        reason: reason(d.reason) as i32,
        limit: d.limit.map(|l| dim(l) as i32),
        team_limit: d.team_limit,
        micros: d.micros,
        tokens: d.tokens,
    }
}

fn decision_of(d: pb::Decision) -> Result<Decision, Invalid> {
    Ok(Decision {
        at_ms: d.at_ms,
        request_id: d.request_id,
        id_altered: d.id_altered,
        key: d.key,
        team: d.team,
        reason: reason_of(d.reason)?,
        limit: d.limit.map(dim_of).transpose()?,
        team_limit: d.team_limit,
        micros: d.micros,
        tokens: d.tokens,
    })
}

fn gov_report(g: &GovReport) -> pb::GovReport {
    pb::GovReport {
        boot: g.boot.clone(),
        table: g.table.clone(),
        subjects: g
            .subjects
            .iter()
            .map(|s| pb::SubjectReport {
                s: s.s.clone(),
                dims: s
                    .dims
                    .iter()
                    .map(|d| pb::DimReport {
                        d: dim(d.d) as i32,
                        w: d.w,
                        credit: d.credit,
                        used: d.used,
                        returned: d.returned,
                        want: d.want,
                        held: d.held,
                        need: d.need,
                        credit_done: d.credit_done,
                        pending: d.pending,
                        lent: d.lent,
                    })
                    .collect(),
            })
            .collect(),
        decisions: g.decisions.iter().map(decision).collect(),
        dropped: g.dropped,
    }
}

// === reports: message -> core (the control plane) ===

/// A report message in the core's terms; a meter the core does not know
/// makes it invalid (nothing of it counts).
pub fn full_report(r: pb::Report) -> Result<FullReport, Invalid> {
    let gov = r.gov.map(gov_report_of).transpose()?;
    Ok(FullReport {
        report: Report {
            node: r.node,
            outcomes: r
                .outcomes
                .into_iter()
                .map(|o| Outcome {
                    target: o.target,
                    ok: o.ok,
                    failed: o.failed,
                    latency_ms_sum: o.latency_ms_sum,
                })
                .collect(),
            gov,
            credentials: r.credentials,
        },
        observed: Observed {
            routes: r
                .routes
                .into_iter()
                .map(|r| RouteOutcome {
                    route: r.route,
                    requests: r.requests,
                    served: r.served,
                    all_failed: r.all_failed,
                    fallbacks: r
                        .fallbacks
                        .into_iter()
                        .map(|c| ClassCount {
                            class: c.class,
                            n: c.n,
                        })
                        .collect(),
                })
                .collect(),
            latency: r
                .latency
                .into_iter()
                .map(|l| TargetLatency {
                    target: l.target,
                    buckets: l.buckets,
                })
                .collect(),
            drill: r.drill.map(|d| DrillOutcome {
                id: d.id,
                injected: d.injected,
                affected: d.affected,
                rescued: d.rescued,
                rescued_ms_sum: d.rescued_ms_sum,
            }),
        },
    })
}

fn gov_report_of(g: pb::GovReport) -> Result<GovReport, Invalid> {
    let mut subjects = Vec::with_capacity(g.subjects.len());
    for s in g.subjects {
        let mut dims = Vec::with_capacity(s.dims.len());
        for d in s.dims {
            dims.push(DimReport {
                d: dim_of(d.d)?,
                w: d.w,
                credit: d.credit,
                used: d.used,
                returned: d.returned,
                want: d.want,
                held: d.held,
                need: d.need,
                credit_done: d.credit_done,
                pending: d.pending,
                lent: d.lent,
            });
        }
        subjects.push(SubjectReport { s: s.s, dims });
    }
    let decisions = g
        .decisions
        .into_iter()
        .map(decision_of)
        .collect::<Result<_, _>>()?;
    Ok(GovReport {
        boot: g.boot,
        table: g.table,
        subjects,
        decisions,
        dropped: g.dropped,
    })
}

// === state: core -> message (the control plane) ===

/// A push as a message.
pub fn state(p: &Push) -> pb::State {
    pb::State {
        // Set by the stream when it answers a report.
        answers: 0,
        epoch: p.epoch.clone(),
        version: p.version,
        heartbeat_ms: u32::try_from(p.heartbeat_ms).unwrap_or(u32::MAX),
        targets: p.targets.as_ref().map(|t| pb::Targets {
            open: t
                .open
                .iter()
                .map(|o| pb::Open {
                    target: o.target.clone(),
                    until_ms: o.until_ms,
                })
                .collect(),
            weights: t
                .weights
                .iter()
                .map(|w| pb::Weight {
                    target: w.target.clone(),
                    factor: w.factor,
                })
                .collect(),
        }),
        faults: p.faults.as_ref().map(|f| pb::Faults {
            faults: f
                .iter()
                .map(|f| pb::Fault {
                    id: f.id.clone(),
                    target: f.target.clone(),
                    share_permille: f.share_permille,
                    class: f.class.as_str().to_string(),
                    until_ms: f.until_ms,
                })
                .collect(),
        }),
        gov: p.gov.as_ref().map(gov_state),
        credentials: p.credentials.as_ref().map(|c| pb::Credentials {
            version: c.version.clone(),
            providers: c
                .providers
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        pb::Secrets {
                            api_keys: s.api_keys.clone(),
                            aws: s.aws.as_ref().map(|a| pb::AwsAuth {
                                region: a.region.clone(),
                                access_key_id: a.access_key_id.clone(),
                                secret_access_key: a.secret_access_key.clone(),
                                session_token: a.session_token.clone(),
                            }),
                        },
                    )
                })
                .collect(),
        }),
    }
}

fn limits(l: &Limits) -> pb::Limits {
    pb::Limits {
        rpm: l.rpm,
        tpm: l.tpm,
        budget_day_usd: l.budget_day_usd,
        budget_month_usd: l.budget_month_usd,
    }
}

fn names(v: &Option<Vec<String>>) -> Option<pb::Names> {
    v.as_ref().map(|names| pb::Names {
        names: names.clone(),
    })
}

fn gov_state(g: &GovState) -> pb::GovState {
    pb::GovState {
        version: g.version.clone(),
        table: g.table.as_ref().map(|t| pb::Table {
            keys: t
                .keys
                .iter()
                .map(|k| pb::KeyRecord {
                    id: k.id.clone(),
                    name: k.name.clone(),
                    sha256: k.sha256.clone(),
                    team: k.team.clone(),
                    routes: names(&k.routes),
                    targets: names(&k.targets),
                    direct: k.direct,
                    max_price: k.max_price.as_ref().map(|p| pb::Price {
                        input: p.input,
                        output: p.output,
                    }),
                    limits: Some(limits(&k.limits)),
                    expires_at_ms: k.expires_at_ms,
                    revoked: k.revoked,
                })
                .collect(),
            teams: t
                .teams
                .iter()
                .map(|t| pb::TeamRecord {
                    name: t.name.clone(),
                    limits: Some(limits(&t.limits)),
                })
                .collect(),
        }),
        envoys: g.envoys,
        grants: g
            .grants
            .iter()
            .map(|g| pb::Grant {
                s: g.s.clone(),
                d: dim(g.d) as i32,
                w: g.w,
                n: g.n,
                remaining: g.remaining,
                no_credit: g.no_credit,
            })
            .collect(),
    }
}

// === state: message -> core (the filter) ===

/// A state message in the core's terms. Parts the filter cannot read whole
/// are left out rather than half-applied: a fault of an unknown failure class
/// is dropped, a grant of an unknown meter too (tokens lost, never invented).
pub fn push(s: pb::State) -> Push {
    Push {
        epoch: s.epoch,
        version: s.version,
        heartbeat_ms: u64::from(s.heartbeat_ms),
        targets: s.targets.map(|t| Targets {
            open: t
                .open
                .into_iter()
                .map(|o| Open {
                    target: o.target,
                    until_ms: o.until_ms,
                })
                .collect(),
            weights: t
                .weights
                .into_iter()
                .map(|w| Weight {
                    target: w.target,
                    factor: w.factor,
                })
                .collect(),
        }),
        faults: s.faults.map(|f| {
            f.faults
                .into_iter()
                .filter_map(|f| {
                    Some(Fault {
                        class: FailureClass::parse(&f.class)?,
                        id: f.id,
                        target: f.target,
                        share_permille: f.share_permille,
                        until_ms: f.until_ms,
                    })
                })
                .collect()
        }),
        gov: s.gov.map(gov_state_of),
        credentials: s.credentials.map(|c| Credentials {
            version: c.version,
            providers: c
                .providers
                .into_iter()
                .map(|(name, s)| {
                    (
                        name,
                        Secrets {
                            api_keys: s.api_keys,
                            aws: s.aws.map(|a| AwsAuth {
                                region: a.region,
                                access_key_id: a.access_key_id,
                                secret_access_key: a.secret_access_key,
                                session_token: a.session_token,
                            }),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }),
    }
}

fn limits_of(l: Option<pb::Limits>) -> Limits {
    l.map(|l| Limits {
        rpm: l.rpm,
        tpm: l.tpm,
        budget_day_usd: l.budget_day_usd,
        budget_month_usd: l.budget_month_usd,
    })
    .unwrap_or_default()
}

fn gov_state_of(g: pb::GovState) -> GovState {
    GovState {
        version: g.version,
        table: g.table.map(|t| Table {
            keys: t
                .keys
                .into_iter()
                .map(|k| KeyRecord {
                    id: k.id,
                    name: k.name,
                    sha256: k.sha256,
                    team: k.team,
                    routes: k.routes.map(|n| n.names),
                    targets: k.targets.map(|n| n.names),
                    direct: k.direct,
                    max_price: k.max_price.map(|p| Price {
                        input: p.input,
                        output: p.output,
                    }),
                    limits: limits_of(k.limits),
                    expires_at_ms: k.expires_at_ms,
                    revoked: k.revoked,
                })
                .collect(),
            teams: t
                .teams
                .into_iter()
                .map(|t| TeamRecord {
                    name: t.name,
                    limits: limits_of(t.limits),
                })
                .collect(),
        }),
        envoys: g.envoys,
        grants: g
            .grants
            .into_iter()
            .filter_map(|g| {
                Some(Grant {
                    d: dim_of(g.d).ok()?,
                    s: g.s,
                    w: g.w,
                    n: g.n,
                    remaining: g.remaining,
                    no_credit: g.no_credit,
                })
            })
            .collect(),
    }
}

/// Encodes a message (what goes in one gRPC frame).
pub fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// Decodes a state message.
pub fn decode_state(bytes: &[u8]) -> Result<pb::State, Invalid> {
    <pb::State as prost::Message>::decode(bytes).map_err(|e| Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn sample_report() -> FullReport {
        FullReport {
            report: Report {
                node: "envoy-1".into(),
                outcomes: vec![Outcome {
                    target: "a/m".into(),
                    ok: 3,
                    failed: 1,
                    latency_ms_sum: 120,
                }],
                gov: Some(GovReport {
                    boot: "b1".into(),
                    table: "v7".into(),
                    subjects: vec![SubjectReport {
                        s: "k:key_a".into(),
                        dims: vec![DimReport {
                            d: Dim::CostDay,
                            w: 20_000,
                            credit: 5,
                            used: -3,
                            returned: 1,
                            want: 9,
                            held: -2,
                            need: 4,
                            credit_done: true,
                            pending: 7,
                            lent: true,
                        }],
                    }],
                    decisions: vec![
                        Decision {
                            at_ms: 7,
                            request_id: "r1".into(),
                            id_altered: true,
                            key: Some("k1".into()),
                            team: Some("t".into()),
                            reason: Reason::RateLimitExceeded,
                            limit: Some(Dim::Tokens),
                            team_limit: true,
                            micros: 0,
                            tokens: 0,
                        },
                        Decision {
                            micros: 44,
                            tokens: 55,
                            ..Decision::new(8, "r2", Reason::Admitted)
                        },
                    ],
                    dropped: 3,
                }),
                credentials: "c1".into(),
            },
            observed: Observed {
                routes: vec![RouteOutcome {
                    route: "chat".into(),
                    requests: 3,
                    served: vec![2, 1],
                    all_failed: 0,
                    fallbacks: vec![ClassCount {
                        class: "server_error".into(),
                        n: 1,
                    }],
                }],
                latency: vec![TargetLatency {
                    target: "a/m".into(),
                    buckets: vec![0, 2],
                }],
                drill: Some(DrillOutcome {
                    id: "d1".into(),
                    injected: 1,
                    affected: 1,
                    rescued: 1,
                    rescued_ms_sum: 30,
                }),
            },
        }
    }

    fn sample_push() -> Push {
        Push {
            epoch: "e".into(),
            version: 9,
            heartbeat_ms: 5000,
            targets: Some(Targets {
                open: vec![Open {
                    target: "a/m".into(),
                    until_ms: 77,
                }],
                weights: vec![Weight {
                    target: "b/m".into(),
                    factor: 0.25,
                }],
            }),
            faults: Some(vec![Fault {
                id: "d1".into(),
                target: "a/m".into(),
                share_permille: 500,
                class: FailureClass::ServerError,
                until_ms: 99,
            }]),
            gov: Some(GovState {
                version: "v7".into(),
                table: Some(Table {
                    keys: vec![KeyRecord {
                        id: "key_a".into(),
                        name: "a".into(),
                        sha256: "00".into(),
                        team: Some("t".into()),
                        routes: Some(vec![]),
                        targets: None,
                        direct: true,
                        max_price: Some(Price {
                            input: 1.5,
                            output: 2.0,
                        }),
                        limits: Limits {
                            rpm: Some(4),
                            budget_day_usd: Some(0.2),
                            ..Limits::default()
                        },
                        expires_at_ms: Some(5),
                        revoked: false,
                    }],
                    teams: vec![TeamRecord {
                        name: "t".into(),
                        limits: Limits::default(),
                    }],
                }),
                envoys: 3,
                grants: vec![Grant {
                    s: "k:key_a".into(),
                    d: Dim::Tokens,
                    w: 1,
                    n: 100,
                    remaining: 900,
                    no_credit: true,
                }],
            }),
            credentials: Some(Credentials {
                version: "c2".into(),
                providers: [(
                    "bedrock".to_string(),
                    Secrets {
                        api_keys: vec!["k1".into()],
                        aws: Some(AwsAuth {
                            region: "us-east-1".into(),
                            access_key_id: "AKIA".into(),
                            secret_access_key: "s3cr3t".into(),
                            session_token: None,
                        }),
                    },
                )]
                .into(),
            }),
        }
    }

    #[test]
    fn a_report_survives_the_wire() {
        let r = sample_report();
        let bytes = report(&r).encode_to_vec();
        let back = full_report(pb::Report::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_push_survives_the_wire_and_absent_parts_stay_absent() {
        let p = sample_push();
        let bytes = state(&p).encode_to_vec();
        assert_eq!(push(decode_state(&bytes).unwrap()), p);
        let beat = Push {
            epoch: "e".into(),
            version: 10,
            heartbeat_ms: 5000,
            ..Push::default()
        };
        let back = push(decode_state(&state(&beat).encode_to_vec()).unwrap());
        assert!(back.is_heartbeat());
        // An empty target list is news (nothing open), not "unchanged".
        let cleared = Push {
            targets: Some(Targets::default()),
            ..beat
        };
        let back = push(decode_state(&state(&cleared).encode_to_vec()).unwrap());
        assert_eq!(back.targets, Some(Targets::default()));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let text = format!("{:?}", state(&sample_push()));
        assert!(!text.contains("s3cr3t") && !text.contains("k1"), "{text}");
    }

    #[test]
    fn unknown_meters_make_a_report_invalid() {
        let mut r = report(&sample_report());
        if let Some(g) = r.gov.as_mut() {
            g.subjects[0].dims[0].d = 42;
        }
        assert!(full_report(r).is_err());
    }

    /// Golden bytes: the wire format is what the .proto says (field numbers,
    /// types), independent of the generated code's version.
    #[test]
    fn wire_format_is_stable() {
        let r = pb::Report {
            node: "n".into(),
            outcomes: vec![pb::Outcome {
                target: "a".into(),
                ok: 1,
                failed: 2,
                latency_ms_sum: 3,
            }],
            credentials: "c".into(),
            ..pb::Report::default()
        };
        assert_eq!(
            r.encode_to_vec(),
            [
                0x0a, 1, b'n', // 1: node
                0x12, 9, 0x0a, 1, b'a', 0x10, 1, 0x18, 2, 0x20, 3, // 2: outcomes
                0x22, 1, b'c', // 4: credentials
            ]
        );
        let s = pb::State {
            epoch: "e".into(),
            version: 2,
            heartbeat_ms: 5,
            targets: Some(pb::Targets::default()),
            ..pb::State::default()
        };
        assert_eq!(
            s.encode_to_vec(),
            [0x0a, 1, b'e', 0x10, 2, 0x18, 5, 0x22, 0]
        );
    }
}

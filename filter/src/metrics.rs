//! The stats the filter emits. Each host defines them its own way: proxy-wasm
//! defines a metric per name on first use (labels joined into the name, turned
//! back into tags by the listener's tag extraction); the native module defines
//! them, with their label names, when its configuration is created.

/// A counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A target's circuit opened.
    CircuitOpened,
    /// A target's circuit let its half-open probe through.
    CircuitHalfOpened,
    /// A target's circuit closed again.
    CircuitClosed,
    /// Cost charged, in millionths of the price unit.
    CostMicros,
    /// The part of [`Counter::CostMicros`] charged from prompt estimates.
    CostEstimatedMicros,
    /// Prompt tokens charged.
    PromptTokens,
    /// Completion tokens charged.
    CompletionTokens,
    /// Cost per target (labels: provider, model).
    TargetCostMicros,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 8] = [
        Counter::CircuitOpened,
        Counter::CircuitHalfOpened,
        Counter::CircuitClosed,
        Counter::CostMicros,
        Counter::CostEstimatedMicros,
        Counter::PromptTokens,
        Counter::CompletionTokens,
        Counter::TargetCostMicros,
    ];

    /// The stat's name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::CircuitOpened => "switchyard_circuit_opened_total",
            Counter::CircuitHalfOpened => "switchyard_circuit_half_opened_total",
            Counter::CircuitClosed => "switchyard_circuit_closed_total",
            Counter::CostMicros => "switchyard_cost_micros_total",
            Counter::CostEstimatedMicros => "switchyard_cost_estimated_micros_total",
            Counter::PromptTokens => "switchyard_prompt_tokens_total",
            Counter::CompletionTokens => "switchyard_completion_tokens_total",
            Counter::TargetCostMicros => "switchyard_target_cost_micros",
        }
    }

    /// Its label names (the values are given in this order).
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Counter::TargetCostMicros => &["provider", "model"],
            _ => &[],
        }
    }
}

/// The name a host without label support gives a labelled stat:
/// `<name>.<label>.<value>…`, the shape Envoy gives the native module's labelled
/// stats in `/stats`, so both hosts' stats read alike (and tag extraction can make
/// them labels again).
pub fn flat_name(counter: Counter, labels: &[&str]) -> String {
    let mut name = counter.name().to_string();
    for (label, v) in counter.labels().iter().zip(labels) {
        name.push('.');
        name.push_str(label);
        name.push('.');
        name.push_str(v);
    }
    name
}

//! End-to-end test support: the mock provider and the harness that runs real
//! Envoy, the real control plane binary and mock providers on ephemeral ports;
//! a real Prometheus and an OTLP trace receiver for the observability tests.

pub mod harness;
pub mod mock;
pub mod otlp;
pub mod prometheus;

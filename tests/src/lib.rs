//! End-to-end test support: the mock provider and the harness that runs real
//! Envoy, the real control plane binary and mock providers on ephemeral ports.

pub mod harness;
pub mod mock;

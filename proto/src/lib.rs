//! Switchyard's own protocols, from the `.proto` files beside this crate.
//!
//! [`fleet::v1`] is the fleet protocol between every Envoy's filter and the
//! control plane (`proto/switchyard/fleet/v1/fleet.proto`): the messages
//! (always) and the tonic service (feature `grpc`). The filter and the control
//! plane keep the core's serde types (`switchyard_core::fleet`,
//! `switchyard_core::governance`) as their model and convert at the edge
//! ([`convert`]).
//!
//! The generated code (`src/gen`) is checked in; `tests/generated.rs` makes it
//! again from the `.proto` files and fails when it differs (`make proto`
//! rewrites it).

pub mod convert;

/// `switchyard.fleet.v1`.
pub mod fleet {
    /// Version 1 of the fleet protocol.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!("gen/switchyard.fleet.v1.rs");
        #[cfg(feature = "grpc")]
        include!("gen/switchyard.fleet.v1.grpc.rs");

        // Secrets never reach logs or panics (`skip_debug` in the generator).
        impl std::fmt::Debug for Secrets {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("Secrets")
                    .field("api_keys", &self.api_keys.len())
                    .field("aws", &self.aws.is_some())
                    .finish()
            }
        }

        impl std::fmt::Debug for AwsAuth {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct("AwsAuth")
                    .field("region", &self.region)
                    .field("access_key_id", &self.access_key_id)
                    .finish_non_exhaustive()
            }
        }
    }
}

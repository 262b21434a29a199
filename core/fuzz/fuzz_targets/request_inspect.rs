//! `request::inspect`: the planner's check of a client's request body.
//!
//! Input: one byte (bit 0: `Chat` or `Embeddings`), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::request::{self, Endpoint};
use switchyard_fuzz::take;

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let endpoint = match take(&mut data, 1).first().map(|b| b & 1) {
        Some(1) => Endpoint::Embeddings,
        _ => Endpoint::Chat,
    };
    match request::inspect(data, endpoint) {
        Ok(req) => {
            // What the planner relies on once a request passed.
            assert!(!req.model.is_empty(), "an accepted request has a model");
            assert!(
                endpoint == Endpoint::Chat || !req.stream,
                "embeddings never stream"
            );
            // An accepted body is a JSON object: the adapter parses it again.
            // (JSON's grammar allows a lone surrogate escape such as `\udd38`,
            // which serde_json's `Value` refuses and `IgnoredAny` lets by: the planner passes it, the
            // OpenAI dialect sends it on as it came, the others answer 400.)
            match serde_json::from_slice::<serde_json::Value>(data) {
                Ok(v) => assert!(v.is_object(), "an accepted body is an object"),
                Err(e) => assert!(
                    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok(),
                    "accepted, yet {e}"
                ),
            }
        }
        Err(e) => {
            assert!(!e.code.is_empty() && !e.message.is_empty());
        }
    }
});

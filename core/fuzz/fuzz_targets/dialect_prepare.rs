//! `dialect::prepare_request`: a client's OpenAI request rewritten for each
//! dialect and endpoint (the adapter's request side).
//!
//! Input: a selector byte (low six bits `% 6`: the dialect, bit 6: embeddings), a byte that
//! picks the target's model from [`MODELS`], then the client's body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::dialect::{self, Dialect, GATEWAY_FIELDS};
use switchyard_core::request::Endpoint;
use switchyard_fuzz::take;

/// Model names as configured or named by clients (the last ones only pass the
/// control plane's checks for some dialects, or none).
const MODELS: [&str; 8] = [
    "gpt-4o-mini",
    "claude-3-5-haiku-latest",
    "gemini-2.0-flash",
    "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "cohere.embed-english-v3",
    "amazon.titan-embed-text-v2:0",
    "",
    "m\"o\\d\u{e9}l\u{1F600}/..",
];

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let selector = take(&mut data, 1).first().copied().unwrap_or(0);
    let model =
        MODELS[usize::from(take(&mut data, 1).first().copied().unwrap_or(0)) % MODELS.len()];
    let dialect = switchyard_fuzz::dialect(selector);
    let endpoint = if selector & 0x40 == 0 {
        Endpoint::Chat
    } else {
        Endpoint::Embeddings
    };
    let Ok(prepared) = dialect::prepare_request(dialect, endpoint, data, model) else {
        return;
    };
    // What the provider gets is JSON when what the client sent is (JSON's
    // grammar allows a lone surrogate escape, `Value` does not: passed through
    // as it came, it is the client's to answer for).
    if serde_json::from_slice::<Value>(data).is_err() {
        return;
    }
    let v: Value = serde_json::from_slice(&prepared.body).unwrap_or_else(|e| {
        panic!(
            "{dialect:?} {endpoint:?}: the provider request is not JSON ({e}): {}",
            String::from_utf8_lossy(&prepared.body)
        )
    });
    let obj = v.as_object().expect("a provider request is a JSON object");
    for field in GATEWAY_FIELDS {
        assert!(!obj.contains_key(*field), "`{field}` reached the provider");
    }
    if dialect::api(dialect).speaks_openai() {
        assert_eq!(obj.get("model").and_then(Value::as_str), Some(model));
    }
    if dialect == Dialect::Anthropic {
        assert_eq!(obj.get("model").and_then(Value::as_str), Some(model));
    }
    assert!(endpoint == Endpoint::Chat || !prepared.stream);
    assert!(!prepared.include_usage || prepared.stream);
    assert!(endpoint == Endpoint::Embeddings || !prepared.base64);
    // Linear in the request: a few dozen bytes for the smallest member at most.
    assert!(
        prepared.body.len() <= 64 * data.len() + 1024,
        "{} bytes became {}",
        data.len(),
        prepared.body.len()
    );
});

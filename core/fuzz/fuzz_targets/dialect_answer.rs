//! `dialect::api(d).answer`: a provider's complete (non-streamed) 2xx answer,
//! checked and translated to OpenAI's format, for every dialect and endpoint.
//!
//! Input: a selector byte (low six bits `% 6`: the dialect, bit 6: embeddings), a flag byte
//! (bit 0: `include_usage`, bit 1: base64 embeddings), then the provider's body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::cost::UsageTail;
use switchyard_core::dialect::{self, Answer, Context, Dialect};
use switchyard_core::failure::FailureClass;
use switchyard_core::request::Endpoint;
use switchyard_fuzz::take;

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let selector = take(&mut data, 1).first().copied().unwrap_or(0);
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let dialect = switchyard_fuzz::dialect(selector);
    let endpoint = if selector & 0x40 == 0 {
        Endpoint::Chat
    } else {
        Endpoint::Embeddings
    };
    let ctx = Context {
        endpoint,
        model: "model-1",
        created: 1_700_000_000,
        request_id: "req-1",
        include_usage: flags & 1 == 1,
        base64: flags & 2 == 2,
    };
    let api = dialect::api(dialect);
    let answer = api.answer(data, &ctx);
    let out = match &answer {
        Answer::Ok(out) | Answer::Filtered(out, _) => out,
        Answer::Failed(class, why) => {
            assert!(
                matches!(
                    class,
                    FailureClass::BadResponse | FailureClass::ContentFilter
                ),
                "a 2xx fails as a bad response or a refusal, not {class:?}"
            );
            assert!(!why.is_empty());
            return;
        }
    };
    if api.speaks_openai() {
        assert_eq!(out.as_slice(), data, "OpenAI answers pass as they came");
        return;
    }
    let v: Value = serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "{dialect:?} translated an answer into invalid JSON ({e}): {}",
            String::from_utf8_lossy(out)
        )
    });
    // Anthropic has no embeddings API (the adapter never asks it for one): its
    // answer is read as a chat completion whatever the endpoint.
    if endpoint == Endpoint::Chat || dialect == Dialect::Anthropic {
        let choices = v["choices"]
            .as_array()
            .expect("a chat answer has `choices`");
        assert!(!choices.is_empty(), "a chat answer has a choice");
        assert!(choices[0]["message"].is_object());
    } else {
        assert!(v["data"].is_array(), "an embeddings answer has `data`");
    }
    // The gateway bills from the `usage` at the end of the answer: it must be
    // the one the translation wrote.
    if let Some(usage) = v.get("usage") {
        let mut tail = UsageTail::default();
        for piece in out.chunks(61) {
            tail.feed(piece);
        }
        let found = tail
            .usage()
            .expect("the usage of a translated answer is found");
        assert_eq!(Some(found.prompt_tokens), usage["prompt_tokens"].as_u64());
        if let Some(c) = usage.get("completion_tokens") {
            assert_eq!(Some(found.completion_tokens), c.as_u64());
        }
    }
});

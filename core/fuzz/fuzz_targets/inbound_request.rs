//! `ClientApi::to_chat`: a client's Anthropic Messages or OpenAI Responses
//! request turned into the gateway's chat-completions form (the planner's
//! first step for `/v1/messages` and `/v1/responses`), and, for Messages,
//! `count_tokens_estimate`.
//!
//! Input: a selector byte (bit 0: Messages or Responses), then the body.
//!
//! Checked: an accepted request's chat form, serialized, passes
//! `request::inspect` as a chat request (the planner checks it so next), with
//! the `stream` the translation reports and the client's `model`; a streamed
//! one asks for the usage (`stream_options.include_usage`). A refusal has a
//! code and a message; one that only means "send it to a target of its own API"
//! (`only_native`) comes only for a body the planner can still route: a JSON
//! object with a non-empty string `model`, and a boolean `stream` if any. A
//! Messages request the translation takes (or refuses only for other APIs) is
//! one `count_tokens` can count.
//!
//! Fixed findings 5 and 6 (docs/fuzzing.md) are replayed by the seeds
//! `finding-5-*` and `finding-6-*`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::inbound::{ClientApi, anthropic};
use switchyard_core::request::{self, Endpoint};
use switchyard_fuzz::take;

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let api = match take(&mut data, 1).first().map(|b| b & 1) {
        Some(1) => ClientApi::Responses,
        _ => ClientApi::Messages,
    };
    let body = data;
    let result = api.to_chat(body);
    if api == ClientApi::Messages {
        let counted = anthropic::count_tokens_estimate(body);
        let routable = match &result {
            Ok(_) => true,
            Err(e) => api.only_native(e),
        };
        if routable && let Err(e) = counted {
            panic!("Messages: translated, yet count_tokens refuses it: {e:?}");
        }
    }
    match result {
        Ok(inbound) => {
            let chat = serde_json::to_vec(&inbound.chat).expect("a chat form serializes");
            let member = inbound.chat.get("stream").and_then(Value::as_bool);
            assert_eq!(
                member.unwrap_or(false),
                inbound.stream,
                "{api:?}: `stream` of the result is not the chat form's"
            );
            // Both client APIs report usage at a stream's end: the chat stream
            // must carry it.
            if inbound.stream {
                assert_eq!(
                    inbound.chat.pointer("/stream_options/include_usage"),
                    Some(&Value::Bool(true)),
                    "{api:?}: a stream without include_usage"
                );
            }
            let client: Value = serde_json::from_slice(body).expect("an accepted body is JSON");
            assert_eq!(
                inbound.chat.get("model"),
                client.get("model"),
                "{api:?}: the chat form's model is not the client's"
            );
            match request::inspect(&chat, Endpoint::Chat) {
                Ok(req) => {
                    assert_eq!(req.stream, inbound.stream, "{api:?}: `stream` changed");
                    assert_eq!(
                        Some(req.model.as_ref()),
                        client.get("model").and_then(Value::as_str)
                    );
                }
                Err(e) => panic!(
                    "{api:?}: accepted, but its chat form fails request::inspect: {} ({})\nchat form: {}",
                    e.message,
                    e.code,
                    String::from_utf8_lossy(&chat)
                ),
            }
        }
        Err(e) => {
            assert!(
                !e.code.is_empty() && !e.message.is_empty(),
                "{api:?}: a refusal without code or message: {e:?}"
            );
            if api.only_native(&e) {
                let parsed = serde_json::from_slice::<Value>(body).unwrap_or_else(|err| {
                    panic!(
                        "{api:?}: only_native ({}) for a body that is no JSON: {err}",
                        e.code
                    )
                });
                assert!(
                    parsed.is_object(),
                    "{api:?}: only_native ({}) for a body that is no object",
                    e.code
                );
                let routable = parsed
                    .get("model")
                    .and_then(Value::as_str)
                    .is_some_and(|m| !m.is_empty());
                assert!(
                    routable,
                    "{api:?}: only_native ({}: {}) for a body without a non-empty string `model`",
                    e.code, e.message
                );
                // The planner plans such a request from its `model` and
                // `stream` alone (`stream` read as a boolean, anything else as
                // false): the rest was checked, so `stream` was too.
                let stream = parsed.get("stream");
                assert!(
                    stream.is_none_or(|s| s.is_null() || s.is_boolean()),
                    "{api:?}: only_native ({}) for a body whose `stream` is {stream:?}",
                    e.code
                );
            }
        }
    }
});

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
//! Open findings 5 and 6 (docs/fuzzing.md) are let through unless `FUZZ_STRICT`
//! names them; their reproducers are the seeds `finding-5-*` and `finding-6-*`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::inbound::{ClientApi, anthropic};
use switchyard_core::request::{self, Endpoint};
use switchyard_fuzz::{strict, take};

/// The chat form's token limit, which `request::inspect` bounds.
const MAX_CHAT_TOKENS: u64 = 10_000_000;

/// Open finding 5: a token limit the client API takes (Messages `max_tokens`,
/// Responses `max_output_tokens`: any integer of at least 1) over the chat
/// form's 10,000,000, which `inspect` then refuses under the chat name.
fn known_token_limit(chat: &Value, e: &request::RequestError) -> bool {
    ["max_tokens", "max_completion_tokens"].iter().any(|k| {
        e.message.starts_with(&format!("`{k}` must be"))
            && chat
                .get(*k)
                .and_then(Value::as_u64)
                .is_some_and(|n| n > MAX_CHAT_TOKENS)
    })
}

/// Open finding 6: `responses::to_chat` returns its `only_native` refusals as
/// soon as it meets them, before the rest of the request is checked: those of
/// `refuse_stored_state` before `model`, every one before `stream`.
fn known_refused_before_stream(api: ClientApi) -> bool {
    api == ClientApi::Responses
}

/// Open finding 6 (see [`known_refused_before_stream`]): stored state or
/// OpenAI-only members refused before `model` is checked.
fn known_refused_before_model(api: ClientApi, body: &Value) -> bool {
    let present = |k: &str| body.get(k).is_some_and(|v| !v.is_null());
    api == ClientApi::Responses
        && (present("previous_response_id")
            || present("conversation")
            || body.get("background") == Some(&Value::Bool(true))
            || present("prompt")
            || present("moderation"))
}

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
                Err(e) if !strict(5) && known_token_limit(&inbound.chat, &e) => {}
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
                    routable || (!strict(6) && known_refused_before_model(api, &parsed)),
                    "{api:?}: only_native ({}: {}) for a body without a non-empty string `model`",
                    e.code,
                    e.message
                );
                // The planner plans such a request from its `model` and
                // `stream` alone (`stream` read as a boolean, anything else as
                // false): the rest was checked, so `stream` was too.
                let stream = parsed.get("stream");
                assert!(
                    stream.is_none_or(|s| s.is_null() || s.is_boolean())
                        || (!strict(6) && known_refused_before_stream(api)),
                    "{api:?}: only_native ({}) for a body whose `stream` is {stream:?}",
                    e.code
                );
            }
        }
    }
});

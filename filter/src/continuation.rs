//! Continuing a committed stream that failed (`on_stream_failure: continue`): the
//! plan's next target is asked, with one buffered HTTP call, to finish the answer
//! from where the failed one stopped, and its words are spliced into the same
//! client stream as OpenAI chunks. (proxy-wasm can only make buffered calls;
//! the native module could stream, but both hosts share this one path.)

use serde_json::{Value, json};
use switchyard_core::dialect::{self, Answer, Context};
use switchyard_core::sse;

/// The instruction for providers without assistant prefill.
const CONTINUE: &str = "Your previous message was cut off. Continue it exactly from where it stopped, without repeating anything of it and without any preamble.";

/// The OpenAI request that asks for the rest of the answer: the client's request
/// (`original`) without streaming, the words already delivered as the assistant's
/// message, and — for providers that cannot continue an assistant message
/// (`prefill` false) — an instruction to go on.
pub fn request(original: &[u8], partial: &str, prefill: bool) -> Option<Vec<u8>> {
    let mut req: Value = serde_json::from_slice(original).ok()?;
    let obj = req.as_object_mut()?;
    obj.remove("stream");
    obj.remove("stream_options");
    obj.remove("fallbacks");
    let messages = obj.get_mut("messages")?.as_array_mut()?;
    messages.push(json!({"role": "assistant", "content": partial}));
    if !prefill {
        messages.push(json!({"role": "user", "content": CONTINUE}));
    }
    serde_json::to_vec(&req).ok()
}

/// The text and whether tool calls were streamed, of translated OpenAI chunks.
#[derive(Debug, Default)]
pub struct Delivered {
    parser: sse::Parser,
    /// The answer's words so far.
    pub text: String,
    /// A tool call went out (such an answer is not continued: half a call
    /// cannot be resumed elsewhere).
    pub tool_calls: bool,
}

impl Delivered {
    /// Reads the chunks the client is sent.
    pub fn feed(&mut self, bytes: &[u8]) {
        for ev in self.parser.feed(bytes) {
            let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                continue;
            };
            let delta = &v["choices"][0]["delta"];
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                self.text.push_str(t);
            }
            if delta.get("tool_calls").is_some_and(|c| !c.is_null()) {
                self.tool_calls = true;
            }
        }
    }
}

/// The continuation's answer as the rest of the client's stream: its words, the
/// finish chunk naming the targets that served (`x_switchyard.served_by`), the
/// usage chunk when asked for (the continuation's, plus an estimate of the words
/// delivered before), `[DONE]`. `None` when the answer has no text to add.
pub fn chunks(
    answer: &Answer,
    ctx: &Context<'_>,
    delivered: &str,
    served_by: &[String],
) -> Option<Vec<u8>> {
    let Answer::Ok(body) = answer else {
        return None;
    };
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = v.pointer("/choices/0/message/content")?.as_str()?;
    let finish = v
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let id = format!("chatcmpl-{}", ctx.request_id);
    let mut out = dialect::chunk_event(
        &id,
        ctx.created,
        ctx.model,
        json!({ "content": text }),
        None,
    );
    let end = json!({
        "id": id, "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        "x_switchyard": {"served_by": served_by, "continued": true},
    });
    out.push_str(&format!("data: {end}\n\n"));
    let usage = ctx.include_usage.then(|| {
        let n = |k: &str| {
            v.pointer(&format!("/usage/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let before = switchyard_core::cost::estimated_prompt_tokens(delivered.len());
        json!({
            "prompt_tokens": n("prompt_tokens"),
            "completion_tokens": n("completion_tokens") + before,
            "total_tokens": n("prompt_tokens") + n("completion_tokens") + before,
        })
    });
    out.push_str(&dialect::stream_end(&id, ctx.created, ctx.model, usage));
    Some(out.into_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use switchyard_core::request::Endpoint;

    #[test]
    fn the_request_asks_for_the_rest() {
        let original = br#"{"model":"chat","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell a story"}]}"#;
        let prefilled: Value =
            serde_json::from_slice(&request(original, "Once upon", true).unwrap()).unwrap();
        assert!(prefilled.get("stream").is_none());
        assert_eq!(
            prefilled["messages"][1],
            json!({"role": "assistant", "content": "Once upon"})
        );
        assert_eq!(prefilled["messages"].as_array().unwrap().len(), 2);
        let told: Value =
            serde_json::from_slice(&request(original, "Once upon", false).unwrap()).unwrap();
        assert_eq!(told["messages"][2]["role"], "user");
    }

    #[test]
    fn the_answer_becomes_the_end_of_the_stream() {
        let ctx = Context {
            endpoint: Endpoint::Chat,
            model: "m",
            created: 1,
            request_id: "r",
            include_usage: true,
            base64: false,
        };
        let answer = Answer::Ok(
            br#"{"choices":[{"message":{"role":"assistant","content":" a time."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3}}"#.to_vec(),
        );
        let out = chunks(&answer, &ctx, "Once upon", &["a/m".into(), "b/n".into()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let mut d = Delivered::default();
        d.feed(text.as_bytes());
        assert_eq!(d.text, " a time.");
        assert!(text.contains("\"served_by\":[\"a/m\",\"b/n\"]"));
        assert!(text.contains("\"completion_tokens\":6"), "{text}");
        assert!(
            chunks(
                &Answer::Failed(
                    switchyard_core::failure::FailureClass::BadResponse,
                    String::new()
                ),
                &ctx,
                "",
                &[]
            )
            .is_none()
        );
    }
}

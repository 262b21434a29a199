//! A target that speaks the client's own API (Anthropic for Messages clients,
//! OpenAI and Azure for Responses clients) gets the client's body and sends its
//! answer back as it is — nothing is lost in translation. The answer is still
//! judged before the client sees it: by the target dialect's own translator for
//! Messages, and by [`ResponsesWatch`] for Responses, whose chat form also
//! carries the usage the gateway counts.

use serde_json::{Value, json};

use super::ClientApi;
use crate::dialect::{Answer, Progress, StreamEnd, StreamTranslator};
use crate::failure::FailureClass;
use crate::{error, sse};

/// Largest event a native stream may hold back while it is incomplete (the
/// bound `eventstream` uses for provider events).
const MAX_EVENT_BYTES: usize = 16 << 20;

/// The client's body for a target of its own API: `model` set to the target's.
pub fn request(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let mut v: Value = serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        return Err("request body is not a JSON object".into());
    };
    obj.insert("model".into(), Value::String(model.into()));
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// Judges a complete answer of the client's own API. `check` is the dialect's
/// translation (its verdict counts, its output does not): the client gets the
/// provider's bytes.
pub fn answer(api: ClientApi, body: &[u8], check: impl FnOnce(&[u8]) -> Answer) -> Answer {
    let verdict = match api {
        ClientApi::Responses => check_response(body),
        _ => check(body),
    };
    match verdict {
        Answer::Ok(_) => Answer::Ok(body.to_vec()),
        Answer::Filtered(_, why) => Answer::Filtered(body.to_vec(), why),
        failed @ Answer::Failed(..) => failed,
    }
}

/// A Responses `response` object that is an answer: `completed`, or
/// `incomplete` (cut at `max_output_tokens`, or by the content filter).
fn check_response(body: &[u8]) -> Answer {
    let bad = |why: &str| Answer::Failed(FailureClass::BadResponse, why.to_string());
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad("the provider's answer is not JSON");
    };
    if v.get("object").and_then(Value::as_str) != Some("response")
        || !v.get("output").is_some_and(Value::is_array)
    {
        return bad("the provider's answer is not a Responses `response`");
    }
    match v.get("status").and_then(Value::as_str) {
        Some("completed") => Answer::Ok(Vec::new()),
        Some("incomplete") if incomplete_reason(&v) == Some("content_filter") => Answer::Filtered(
            Vec::new(),
            "the response was cut by the content filter".into(),
        ),
        Some("incomplete") => Answer::Ok(Vec::new()),
        Some("failed") => {
            let (class, message) = response_error(&v);
            Answer::Failed(class, message)
        }
        other => bad(&format!("the response's status is {other:?}, not complete")),
    }
}

fn incomplete_reason(response: &Value) -> Option<&str> {
    response
        .pointer("/incomplete_details/reason")
        .and_then(Value::as_str)
}

/// The class and message of a failed response's (or an `error` event's) error.
fn response_error(v: &Value) -> (FailureClass, String) {
    let e = v.get("error").unwrap_or(v);
    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the provider's response failed");
    let class = match code {
        "rate_limit_exceeded" => FailureClass::RateLimited,
        "invalid_prompt" => FailureClass::BadRequest,
        "context_length_exceeded" => FailureClass::ContextLength,
        _ => FailureClass::ServerError,
    };
    (class, crate::failure::scrub(message))
}

/// Sends a native event stream on event by event while `inner` judges it (its
/// output, the chat form, is kept for [`NativeStream::take_chat`]). When `inner`
/// finds the stream failed, the client gets the provider's own error event if
/// that is what failed it, else an error event of its API; nothing after.
pub struct NativeStream {
    api: ClientApi,
    inner: Box<dyn StreamTranslator>,
    buf: Vec<u8>,
    chat: Vec<u8>,
    /// The last `sequence_number` seen (Responses events are numbered).
    sequence: Option<u64>,
    /// The stream ended for the client (its last event was sent).
    ended: bool,
}

impl NativeStream {
    /// A stream of the client's `api`, judged by `inner`.
    pub fn new(api: ClientApi, inner: Box<dyn StreamTranslator>) -> NativeStream {
        NativeStream {
            api,
            inner,
            buf: Vec::new(),
            chat: Vec::new(),
            sequence: None,
            ended: false,
        }
    }

    /// The chat form of what was fed since the last call (usage, continuations).
    pub fn take_chat(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.chat)
    }

    /// One complete event (with its blank line): judged, then passed or replaced.
    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let was_over = self.inner.progress().end.is_some();
        let chat = self.inner.feed(raw);
        self.chat.extend_from_slice(&chat);
        let parsed = sse::Parser::default().feed(raw).into_iter().next();
        if let Some(seq) = parsed
            .as_ref()
            .and_then(|e| serde_json::from_str::<Value>(&e.data).ok())
            .and_then(|d| d.get("sequence_number").and_then(Value::as_u64))
        {
            self.sequence = Some(seq);
        }
        match self.inner.progress().end {
            Some(StreamEnd::Failed(_, why)) if !was_over => {
                self.ended = true;
                let own_error = parsed.is_some_and(|e| self.is_error_event(&e));
                if own_error {
                    out.extend_from_slice(raw);
                } else {
                    out.extend_from_slice(&self.error_event(&why));
                }
            }
            Some(_) if !was_over => {
                // Anthropic ends with `message_stop`; the Responses stream with its
                // terminal event: nothing after is the answer's, and the client,
                // whose stream the gateway counts as complete, gets none of it.
                self.ended = true;
                out.extend_from_slice(raw);
            }
            _ => out.extend_from_slice(raw),
        }
    }

    fn is_error_event(&self, e: &sse::Event) -> bool {
        match self.api {
            ClientApi::Responses => matches!(e.event.as_deref(), Some("error" | "response.failed")),
            _ => e.event.as_deref() == Some("error"),
        }
    }

    /// An error event of the client's API, for a stream that broke off.
    fn error_event(&self, why: &str) -> Vec<u8> {
        let message = crate::failure::scrub(why);
        let (name, data) = match self.api {
            ClientApi::Responses => (
                "error",
                json!({
                    "type": "error",
                    "code": "server_error",
                    "message": message,
                    "param": null,
                    "sequence_number": self.sequence.map_or(0, |s| s + 1),
                }),
            ),
            _ => (
                "error",
                json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            ),
        };
        format!("event: {name}\ndata: {data}\n\n").into_bytes()
    }
}

impl StreamTranslator for NativeStream {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end).collect();
            self.event(&raw, &mut out);
        }
        if self.buf.len() > MAX_EVENT_BYTES && !self.ended {
            self.buf.clear();
            // Fed to the judge as an end: it fails the stream.
            let chat = self.inner.finish();
            self.chat.extend_from_slice(&chat);
            self.ended = true;
            out.extend_from_slice(&self.error_event("the provider sent an event over 16 MiB"));
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.buf.is_empty() {
            // A last event without its blank line.
            let mut raw = std::mem::take(&mut self.buf);
            raw.extend_from_slice(b"\n\n");
            self.event(&raw, &mut out);
        }
        if self.ended {
            return out;
        }
        let chat = self.inner.finish();
        self.chat.extend_from_slice(&chat);
        if let Some(StreamEnd::Failed(_, why)) = self.inner.progress().end {
            out.extend_from_slice(&self.error_event(&why));
        }
        self.ended = true;
        out
    }

    fn progress(&self) -> Progress {
        Progress {
            // The client's bytes are the provider's: nothing to leave out.
            error_tail: 0,
            ..self.inner.progress()
        }
    }
}

/// The end (after the blank line) of the first complete event in `buf`.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Judges a Responses event stream (OpenAI's own, passed to a Responses
/// client as is): content, its end, its failure, and the usage of its terminal
/// event — as a chat usage chunk, the form the gateway counts.
#[derive(Debug, Default)]
pub struct ResponsesWatch {
    parser: sse::Parser,
    progress: Progress,
}

impl ResponsesWatch {
    fn fail(&mut self, class: FailureClass, why: String, out: &mut Vec<u8>) {
        out.extend_from_slice(&error::stream_error_events(&why, class.as_str(), ""));
        self.progress.end = Some(StreamEnd::Failed(class, why));
    }
}

impl StreamTranslator for ResponsesWatch {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in self.parser.feed(bytes) {
            if self.progress.end.is_some() {
                break;
            }
            let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
                self.fail(
                    FailureClass::BadResponse,
                    "the provider sent an event that is not JSON".into(),
                    &mut out,
                );
                break;
            };
            let kind = data
                .get("type")
                .and_then(Value::as_str)
                .or(ev.event.as_deref())
                .unwrap_or("");
            match kind {
                "response.output_text.delta"
                | "response.refusal.delta"
                | "response.function_call_arguments.delta"
                | "response.reasoning_summary_text.delta"
                | "response.reasoning_text.delta" => self.progress.content = true,
                "response.output_item.added"
                    if data.pointer("/item/type").and_then(Value::as_str)
                        == Some("function_call") =>
                {
                    self.progress.content = true
                }
                "response.completed" | "response.incomplete" => {
                    let response = data.get("response").cloned().unwrap_or(Value::Null);
                    if let Some(u) = response.get("usage") {
                        let usage = json!({
                            "prompt_tokens": u.get("input_tokens").cloned().unwrap_or(json!(0)),
                            "completion_tokens": u.get("output_tokens").cloned().unwrap_or(json!(0)),
                        });
                        out.extend_from_slice(
                            format!("data: {}\n\n", json!({ "usage": usage })).as_bytes(),
                        );
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    self.progress.end = Some(
                        if kind == "response.incomplete"
                            && incomplete_reason(&response) == Some("content_filter")
                        {
                            StreamEnd::Filtered("the response was cut by the content filter".into())
                        } else {
                            StreamEnd::Complete
                        },
                    );
                }
                "response.failed" | "error" => {
                    let (class, why) = match data.get("response") {
                        Some(r) => response_error(r),
                        None => response_error(&data),
                    };
                    self.fail(class, why, &mut out);
                }
                _ => {}
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.progress.end.is_none() {
            self.fail(
                FailureClass::BadResponse,
                "The provider ended the stream before the response was complete.".into(),
                &mut out,
            );
        }
        out
    }

    fn progress(&self) -> Progress {
        self.progress.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::dialect::{Context, Dialect, api};
    use crate::request::Endpoint;

    fn ctx() -> Context<'static> {
        Context {
            endpoint: Endpoint::Chat,
            model: "claude",
            created: 1,
            request_id: "r",
            include_usage: true,
            base64: false,
        }
    }

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude\",\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn anthropic() -> NativeStream {
        NativeStream::new(ClientApi::Messages, api(Dialect::Anthropic).stream(&ctx()))
    }

    #[test]
    fn a_native_stream_is_passed_byte_for_byte_and_judged() {
        for step in [1, 7, ANTHROPIC_STREAM.len()] {
            let mut s = anthropic();
            let mut out = Vec::new();
            let mut chat = Vec::new();
            for piece in ANTHROPIC_STREAM.as_bytes().chunks(step) {
                out.extend(s.feed(piece));
                chat.extend(s.take_chat());
            }
            out.extend(s.finish());
            chat.extend(s.take_chat());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                ANTHROPIC_STREAM,
                "step {step}"
            );
            assert_eq!(s.progress().end, Some(StreamEnd::Complete));
            let mut usage = crate::cost::UsageTail::default();
            usage.feed(&chat);
            let u = usage.usage().expect("usage in the chat form");
            assert_eq!((u.prompt_tokens, u.completion_tokens), (12, 5));
        }
    }

    #[test]
    fn a_native_stream_that_breaks_off_ends_with_an_error_event_of_its_api() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM
            .find("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1")
            .unwrap()];
        let mut s = anthropic();
        let mut out = s.feed(cut.as_bytes());
        assert!(s.progress().content);
        out.extend(s.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(cut));
        let tail = &text[cut.len()..];
        assert!(tail.starts_with("event: error\ndata: {"), "{tail}");
        assert!(matches!(s.progress().end, Some(StreamEnd::Failed(..))));
        // The provider's own error event is passed as is, and nothing after it.
        let own = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let mut s = anthropic();
        let mut out = s.feed(cut.as_bytes());
        out.extend(s.feed(own.as_bytes()));
        out.extend(s.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        out.extend(s.finish());
        assert_eq!(String::from_utf8(out).unwrap(), format!("{cut}{own}"));
    }

    const RESPONSES_STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":9,\"output_tokens\":2,\"total_tokens\":11}}}\n\n",
    );

    #[test]
    fn a_responses_stream_is_watched() {
        let mut s = NativeStream::new(ClientApi::Responses, Box::new(ResponsesWatch::default()));
        let created = RESPONSES_STREAM
            .find("event: response.output_text")
            .unwrap();
        let out = s.feed(&RESPONSES_STREAM.as_bytes()[..created]);
        assert!(!s.progress().content, "not yet content");
        assert_eq!(out, RESPONSES_STREAM.as_bytes()[..created]);
        let mut out = s.feed(&RESPONSES_STREAM.as_bytes()[created..]);
        out.extend(s.finish());
        assert_eq!(out, RESPONSES_STREAM.as_bytes()[created..]);
        assert_eq!(s.progress().end, Some(StreamEnd::Complete));
        let mut usage = crate::cost::UsageTail::default();
        usage.feed(&s.take_chat());
        assert_eq!(usage.usage().unwrap().prompt_tokens, 9);
        // Cut before its end: an `error` event numbered after the last one.
        let end = RESPONSES_STREAM.find("event: response.completed").unwrap();
        let mut s = NativeStream::new(ClientApi::Responses, Box::new(ResponsesWatch::default()));
        let _ = s.feed(&RESPONSES_STREAM.as_bytes()[..end]);
        let tail = String::from_utf8(s.finish()).unwrap();
        assert!(tail.starts_with("event: error\ndata: "), "{tail}");
        let data: Value =
            serde_json::from_str(tail.trim_end().split_once("data: ").unwrap().1).unwrap();
        assert_eq!(data["sequence_number"], 2);
        assert_eq!(data["code"], "server_error");
    }

    /// Fuzzing finding 7 (docs/fuzzing.md): events after the one that
    /// completed the stream reached the client.
    #[test]
    fn nothing_is_passed_after_the_event_that_completed_the_stream() {
        let late_delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"more\"}}\n\n";
        let late_error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let late = format!("{late_delta}{late_error}");
        for whole in [true, false] {
            let mut s = anthropic();
            let mut out = if whole {
                s.feed(format!("{ANTHROPIC_STREAM}{late}").as_bytes())
            } else {
                let mut out = s.feed(ANTHROPIC_STREAM.as_bytes());
                out.extend(s.feed(late.as_bytes()));
                out
            };
            out.extend(s.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                ANTHROPIC_STREAM,
                "whole: {whole}"
            );
            assert_eq!(s.progress().end, Some(StreamEnd::Complete));
        }

        let late = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":3,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"more\"}\n\nevent: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"late\",\"sequence_number\":4}\n\n";
        let mut s = NativeStream::new(ClientApi::Responses, Box::new(ResponsesWatch::default()));
        let mut out = s.feed(format!("{RESPONSES_STREAM}{late}").as_bytes());
        out.extend(s.finish());
        assert_eq!(String::from_utf8(out).unwrap(), RESPONSES_STREAM);
        assert_eq!(s.progress().end, Some(StreamEnd::Complete));
    }

    #[test]
    fn complete_answers_are_judged_and_kept_as_they_are() {
        let ok = br#"{"id":"resp_1","object":"response","status":"completed","output":[{"type":"message"}]}"#;
        assert_eq!(
            answer(ClientApi::Responses, ok, |_| unreachable!()),
            Answer::Ok(ok.to_vec())
        );
        let failed = br#"{"id":"resp_1","object":"response","status":"failed","output":[],"error":{"code":"rate_limit_exceeded","message":"slow down"}}"#;
        assert!(matches!(
            answer(ClientApi::Responses, failed, |_| unreachable!()),
            Answer::Failed(FailureClass::RateLimited, _)
        ));
        let not_one = br#"{"choices":[]}"#;
        assert!(matches!(
            answer(ClientApi::Responses, not_one, |_| unreachable!()),
            Answer::Failed(FailureClass::BadResponse, _)
        ));
        let msg = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"t","signature":"s"},{"type":"text","text":"Hi"}],"model":"claude","stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}"#;
        let judged = answer(ClientApi::Messages, msg, |b| {
            api(Dialect::Anthropic).answer(b, &ctx())
        });
        assert_eq!(judged, Answer::Ok(msg.to_vec()), "the signature survives");
        assert_eq!(
            serde_json::from_slice::<Value>(
                &request(br#"{"model":"alias","max_tokens":5}"#, "claude-x").unwrap()
            )
            .unwrap()["model"],
            "claude-x"
        );
    }
}

//! The streams of the client APIs: the gateway's chat-completions SSE turned
//! back into Anthropic Messages events (`anthropic::MessageStream`) or Responses
//! events (`responses::ResponseStream`), and a native stream passed on event by
//! event while it is judged (`native::NativeStream`, over the Anthropic
//! dialect's translator for Messages and over `native::ResponsesWatch` for
//! Responses). Each is fed in random pieces, then `finish()`.
//!
//! Input: a selector byte (low two bits: `MessageStream`, `ResponseStream`,
//! native Messages, native Responses; bit 7: `include_usage` of the native
//! judge), four bytes that seed the cutting, then the stream (chat SSE for the
//! first two, the provider's own SSE for the native ones).
//!
//! Checked, for every stream: the same bytes come out whatever the cuts;
//! nothing after the stream's end, nor from a second `finish()` or a `feed()`
//! after it; after `finish()` the output ends with the event that ended the
//! stream (a broken stream is never silent).
//!
//! For the translations: after every piece the output is whole events, each an
//! `event: <type>` line and a `data: <JSON object>` line whose `type` is the
//! event's, blank-line separated; after `finish()` exactly one of them is
//! terminal (Messages: `message_stop` or `error`; Responses:
//! `response.completed`, `response.incomplete`, `response.failed` or `error`),
//! the last; they follow the protocol an SDK's accumulator relies on
//! (Messages: `message_start` first, content blocks opened, filled and closed
//! in index order, `message_delta` before `message_stop`; Responses:
//! `sequence_number` 0, 1, 2, …, `response.created` first, items and content
//! parts added, filled and done in order, the final `response` holding every
//! item).
//!
//! For a native stream (the provider's own events): the output is a prefix of
//! the input's events (as the stream splits them; a last one without its blank
//! line gets one) plus at most one error event of the client's API; the same
//! when fed event by event; once the judge has ended the stream, nothing more
//! is passed, and the last event is the one that ended it (a failure: an error
//! event, the provider's or the client API's); the chat form kept for usage is
//! whole `data:` events ending with `[DONE]`.
//!
//! Fixed finding 7 (docs/fuzzing.md) is replayed by the seeds `finding-7-*`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::dialect::{self, Context, Dialect, StreamEnd, StreamTranslator};
use switchyard_core::inbound::native::{NativeStream, ResponsesWatch};
use switchyard_core::inbound::{ClientApi, StreamBack, anthropic, responses};
use switchyard_core::request::Endpoint;
use switchyard_core::sse;
use switchyard_fuzz::{check_openai_events, chunks, seed, take};

/// The model as the client named it.
const CLIENT_MODEL: &str = "claude-client";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Messages,
    Responses,
    NativeMessages,
    NativeResponses,
}

impl Mode {
    fn api(self) -> ClientApi {
        match self {
            Mode::Messages | Mode::NativeMessages => ClientApi::Messages,
            Mode::Responses | Mode::NativeResponses => ClientApi::Responses,
        }
    }

    fn native(self) -> bool {
        matches!(self, Mode::NativeMessages | Mode::NativeResponses)
    }
}

fn is_terminal(api: ClientApi, name: &str) -> bool {
    match api {
        ClientApi::Messages => matches!(name, "message_stop" | "error"),
        _ => matches!(
            name,
            "response.completed" | "response.incomplete" | "response.failed" | "error"
        ),
    }
}

// === the stream under test ===

enum Stream {
    Back(Box<dyn StreamBack>),
    Native(NativeStream),
}

impl Stream {
    fn new(mode: Mode, include_usage: bool) -> Stream {
        let ctx = Context {
            endpoint: Endpoint::Chat,
            model: "claude-3-5-haiku-latest",
            created: 1_700_000_000,
            request_id: "req-1",
            include_usage,
            base64: false,
        };
        match mode {
            Mode::Messages => Stream::Back(Box::new(anthropic::MessageStream::new(CLIENT_MODEL))),
            Mode::Responses => Stream::Back(Box::new(responses::ResponseStream::new(
                CLIENT_MODEL,
                ctx.created,
                ctx.request_id,
            ))),
            Mode::NativeMessages => Stream::Native(NativeStream::new(
                ClientApi::Messages,
                dialect::api(Dialect::Anthropic).stream(&ctx),
            )),
            Mode::NativeResponses => Stream::Native(NativeStream::new(
                ClientApi::Responses,
                Box::new(ResponsesWatch::default()),
            )),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Stream::Back(s) => s.feed(bytes),
            Stream::Native(s) => s.feed(bytes),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            Stream::Back(s) => s.finish(),
            Stream::Native(s) => s.finish(),
        }
    }

    /// How the native stream's judge has ended the stream.
    fn end(&self) -> Option<StreamEnd> {
        match self {
            Stream::Back(_) => None,
            Stream::Native(s) => s.progress().end,
        }
    }

    fn take_chat(&mut self) -> Vec<u8> {
        match self {
            Stream::Back(_) => Vec::new(),
            Stream::Native(s) => s.take_chat(),
        }
    }
}

/// What a stream made of the pieces: its output after each, after `finish()`,
/// and the chat form (native streams).
struct Run {
    pieces: Vec<Vec<u8>>,
    finish: Vec<u8>,
    chat: Vec<u8>,
    /// Per piece: how the native judge had ended the stream after it.
    ends: Vec<Option<StreamEnd>>,
    /// How it ended after `finish()`.
    end: Option<StreamEnd>,
}

impl Run {
    fn all(&self) -> Vec<u8> {
        let mut out = self.pieces.concat();
        out.extend_from_slice(&self.finish);
        out
    }
}

fn run(mode: Mode, include_usage: bool, pieces: &[&[u8]]) -> Run {
    let mut s = Stream::new(mode, include_usage);
    let mut out = Run {
        pieces: Vec::new(),
        finish: Vec::new(),
        chat: Vec::new(),
        ends: Vec::new(),
        end: None,
    };
    for piece in pieces {
        out.pieces.push(s.feed(piece));
        out.ends.push(s.end());
        out.chat.extend(s.take_chat());
    }
    out.finish = s.finish();
    out.end = s.end();
    out.chat.extend(s.take_chat());
    if mode.native() {
        assert!(out.end.is_some(), "{mode:?}: no end after finish()");
    }
    assert!(
        s.finish().is_empty(),
        "{mode:?}: a second finish() sent bytes"
    );
    let late = s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"late\"}}]}\n\ndata: [DONE]\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    assert!(
        late.is_empty(),
        "{mode:?}: sent bytes after finish(): {:?}",
        String::from_utf8_lossy(&late)
    );
    out
}

// === the client's events ===

/// One event of a translated stream.
struct Event {
    name: String,
    data: serde_json::Map<String, Value>,
}

/// The events of `out`, which must be whole `event: <type>` + `data: <JSON
/// object with that type>` events.
fn events(out: &[u8]) -> Result<Vec<Event>, String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("output is not UTF-8: {e}"))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let body = text
        .strip_suffix("\n\n")
        .ok_or_else(|| "the output does not end with a whole event".to_string())?;
    let mut events = Vec::new();
    for (i, block) in body.split("\n\n").enumerate() {
        let (first, second) = block
            .split_once('\n')
            .ok_or_else(|| format!("event {i} is not two lines: {block:?}"))?;
        let name = first
            .strip_prefix("event: ")
            .filter(|n| !n.is_empty() && !n.contains('\r'))
            .ok_or_else(|| format!("event {i} does not start with `event: <name>`: {block:?}"))?;
        let payload = second
            .strip_prefix("data: ")
            .filter(|d| !d.contains(['\n', '\r']))
            .ok_or_else(|| {
                format!("event {i}'s second line is not one `data: ` line: {block:?}")
            })?;
        let data = match serde_json::from_str::<Value>(payload) {
            Ok(Value::Object(m)) => m,
            Ok(other) => return Err(format!("event {i}'s data is no JSON object: {other}")),
            Err(e) => return Err(format!("event {i}'s data is not JSON ({e}): {payload:?}")),
        };
        if data.get("type").and_then(Value::as_str) != Some(name) {
            return Err(format!(
                "event {i} `{name}` has data of another type: {payload}"
            ));
        }
        events.push(Event {
            name: name.to_string(),
            data,
        });
    }
    Ok(events)
}

fn index(e: &Event, key: &str) -> Option<u64> {
    e.data.get(key).and_then(Value::as_u64)
}

/// Anthropic's event protocol, as the SDKs' message accumulators rely on it.
fn check_messages(events: &[Event]) -> Result<(), String> {
    let mut open: Option<(u64, String)> = None;
    let mut next = 0;
    let mut delta = false;
    for (i, e) in events.iter().enumerate() {
        let at = format!("event {i} ({})", e.name);
        match e.name.as_str() {
            "error" => {}
            "message_start" if i == 0 => {}
            _ if i == 0 => return Err(format!("{at}: the stream starts without message_start")),
            "message_start" => return Err(format!("{at}: a second message_start")),
            "content_block_start" => {
                if open.is_some() {
                    return Err(format!("{at}: a block starts while another is open"));
                }
                if index(e, "index") != Some(next) {
                    return Err(format!(
                        "{at}: index {:?}, expected {next}",
                        e.data.get("index")
                    ));
                }
                let kind = e
                    .data
                    .get("content_block")
                    .and_then(|b| b.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                open = Some((next, kind.to_string()));
            }
            "content_block_delta" => {
                let Some((n, kind)) = &open else {
                    return Err(format!("{at}: a delta without an open block"));
                };
                if index(e, "index") != Some(*n) {
                    return Err(format!("{at}: a delta for another block than the open {n}"));
                }
                let expected = if kind == "text" {
                    "text_delta"
                } else {
                    "input_json_delta"
                };
                let got = e
                    .data
                    .get("delta")
                    .and_then(|d| d.get("type"))
                    .and_then(Value::as_str);
                if got != Some(expected) {
                    return Err(format!("{at}: a {got:?} delta in a {kind} block"));
                }
            }
            "content_block_stop" => {
                match &open {
                    Some((n, _)) if index(e, "index") == Some(*n) => {}
                    _ => return Err(format!("{at}: stops a block that is not open")),
                }
                open = None;
                next += 1;
            }
            "message_delta" => {
                if open.is_some() || delta {
                    return Err(format!("{at}: message_delta with a block open, or twice"));
                }
                delta = true;
            }
            "message_stop" => {
                if !delta {
                    return Err(format!("{at}: message_stop without message_delta"));
                }
            }
            other => return Err(format!("{at}: an event Anthropic does not send: {other}")),
        }
    }
    Ok(())
}

/// An output item of a Responses stream, as its events build it.
struct Item {
    kind: String,
    done: bool,
    /// Its content parts (messages): type, and whether done.
    parts: Vec<(String, bool)>,
}

/// The Responses event protocol, as openai-python's stream accumulator relies
/// on it.
fn check_responses(events: &[Event]) -> Result<(), String> {
    let mut items: Vec<Item> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let at = format!("event {i} ({})", e.name);
        if index(e, "sequence_number") != Some(i as u64) {
            return Err(format!(
                "{at}: sequence_number {:?}",
                e.data.get("sequence_number")
            ));
        }
        let output_index = index(e, "output_index").map(|n| n as usize);
        // The open item, when the event is for it and it is of `kind`.
        let open_item = |items: &[Item], kind: Option<&str>| -> Result<usize, String> {
            let n = items.len();
            match items.last() {
                Some(l)
                    if output_index == Some(n - 1)
                        && !l.done
                        && kind.is_none_or(|k| l.kind == k) =>
                {
                    Ok(n - 1)
                }
                _ => Err(format!(
                    "{at}: not for the open {} item (output_index {output_index:?}, {n} items)",
                    kind.unwrap_or("")
                )),
            }
        };
        let data = |key: &str| e.data.get(key);
        let kind_of = |key: &str| {
            data(key)
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match e.name.as_str() {
            "response.created" if i == 0 => {}
            _ if i == 0 => {
                return Err(format!("{at}: the stream starts without response.created"));
            }
            "response.in_progress" => {}
            "response.output_item.added" => {
                if output_index != Some(items.len()) || items.last().is_some_and(|l| !l.done) {
                    return Err(format!(
                        "{at}: output_index {output_index:?} with {} items, the last one open",
                        items.len()
                    ));
                }
                items.push(Item {
                    kind: kind_of("item"),
                    done: false,
                    parts: Vec::new(),
                });
            }
            "response.output_item.done" => {
                let l = open_item(&items, None)?;
                if items[l].parts.iter().any(|p| !p.1) {
                    return Err(format!("{at}: the item is done with a part open"));
                }
                items[l].done = true;
            }
            "response.content_part.added" => {
                let l = open_item(&items, Some("message"))?;
                let parts = &mut items[l].parts;
                if index(e, "content_index") != Some(parts.len() as u64)
                    || parts.last().is_some_and(|p| !p.1)
                {
                    return Err(format!(
                        "{at}: content_index {:?} with {} parts, the last one open",
                        data("content_index"),
                        parts.len()
                    ));
                }
                parts.push((kind_of("part"), false));
            }
            name @ ("response.output_text.delta"
            | "response.output_text.done"
            | "response.refusal.delta"
            | "response.refusal.done"
            | "response.content_part.done") => {
                let l = open_item(&items, Some("message"))?;
                let parts = &mut items[l].parts;
                let n = parts.len();
                let kind = if name.starts_with("response.refusal") {
                    "refusal"
                } else {
                    "output_text"
                };
                let ok = n > 0
                    && index(e, "content_index") == Some(n as u64 - 1)
                    && !parts[n - 1].1
                    && (name == "response.content_part.done" || parts[n - 1].0 == kind);
                if !ok {
                    return Err(format!(
                        "{at}: not for the open {kind} part (content_index {:?}, {n} parts)",
                        data("content_index")
                    ));
                }
                if name == "response.content_part.done" {
                    parts[n - 1].1 = true;
                }
            }
            "response.function_call_arguments.delta" | "response.function_call_arguments.done" => {
                open_item(&items, Some("function_call"))?;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                let response = data("response");
                let status = response
                    .and_then(|r| r.get("status"))
                    .and_then(Value::as_str);
                if status != e.name.strip_prefix("response.") {
                    return Err(format!("{at}: the response's status is {status:?}"));
                }
                let output = response
                    .and_then(|r| r.get("output"))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if output != items.len() {
                    return Err(format!(
                        "{at}: the response holds {output} items, {} were added",
                        items.len()
                    ));
                }
                if e.name != "response.failed" && items.iter().any(|i| !i.done) {
                    return Err(format!("{at}: an item is still open"));
                }
            }
            "error" => {}
            other => {
                return Err(format!(
                    "{at}: an event the Responses API does not send: {other}"
                ));
            }
        }
    }
    Ok(())
}

// === native streams ===

/// The end of the first event in `buf`, as `NativeStream` splits a stream
/// (after the first `\n\n` or `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| {
        if buf[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if buf[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else {
            None
        }
    })
}

/// The input's events as a native stream passes them: each up to its blank
/// line, and a last one without its blank line given one.
fn native_events(input: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = input;
    while let Some(end) = event_end(rest) {
        out.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        let mut last = rest.to_vec();
        last.extend_from_slice(b"\n\n");
        out.push(last);
    }
    out
}

/// One error event of the client's API, as a native stream makes it.
fn is_error_event(api: ClientApi, bytes: &[u8]) -> bool {
    let Ok(evs) = events(bytes) else {
        return false;
    };
    let [e] = &evs[..] else {
        return false;
    };
    e.name == "error"
        && match api {
            ClientApi::Messages => e.data.get("error").is_some_and(Value::is_object),
            _ => e.data.get("message").is_some_and(Value::is_string),
        }
}

fn check_native(mode: Mode, input: &[u8], split: &Run, include_usage: bool) {
    let api = mode.api();
    let all = split.all();
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // A prefix of the input's events, then at most one error event.
    let evs = native_events(input);
    let mut at = 0;
    let mut passed = 0;
    for e in &evs {
        if all[at..].starts_with(e) {
            at += e.len();
            passed += 1;
        } else {
            break;
        }
    }
    let tail = &all[at..];
    assert!(
        tail.is_empty() || is_error_event(api, tail),
        "{mode:?}: the output is not the input's first {passed} events and at most one error event; after them: {:?}\nwhole output: {:?}",
        show(tail),
        show(&all)
    );

    // Event by event: once the judge has ended the stream, nothing more; and
    // the last event says how it ended.
    let mut one_by_one: Vec<&[u8]> = Vec::new();
    let mut rest = input;
    while let Some(end) = event_end(rest) {
        one_by_one.push(&rest[..end]);
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        one_by_one.push(rest);
    }
    let by_event = run(mode, include_usage, &one_by_one);
    assert_eq!(
        show(&by_event.all()),
        show(&all),
        "{mode:?}: fed event by event, the output differs"
    );
    let ender = by_event.ends.iter().position(Option::is_some);
    let said = match ender {
        Some(k) => by_event.pieces[..=k].concat(),
        None => by_event.all(),
    };
    if said != all {
        let end = ender.and_then(|k| by_event.ends[k].clone());
        panic!(
            "{mode:?}: the provider's events were passed after the stream had ended ({end:?}) with event {ender:?}: {:?}\noutput until then: {:?}",
            show(&all[said.len()..]),
            show(&said)
        );
    }
    let last = sse::Parser::default().feed(&said).pop();
    match &by_event.end {
        Some(StreamEnd::Failed(..)) => {
            let name = last.as_ref().and_then(|e| e.event.as_deref());
            let error = match api {
                ClientApi::Messages => name == Some("error"),
                _ => matches!(name, Some("error" | "response.failed")),
            };
            assert!(
                error,
                "{mode:?}: the stream failed, yet its last event is {last:?}\noutput: {:?}",
                show(&said)
            );
        }
        _ => {
            // Complete or filtered: by the last event passed.
            let ended_by = match ender {
                Some(k) => one_by_one[k].to_vec(),
                None => evs.last().cloned().unwrap_or_default(),
            };
            assert!(
                !ended_by.is_empty() && said.ends_with(&ended_by),
                "{mode:?}: the stream ended ({:?}), but not with the event that ended it\noutput: {:?}",
                by_event.end,
                show(&said)
            );
        }
    }

    // The chat form the gateway counts usage from.
    if let Err(e) = check_openai_events(&split.chat, true) {
        panic!(
            "{mode:?}: the chat form: {e}\nchat form: {:?}",
            show(&split.chat)
        );
    }
}

// === the target ===

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let selector = take(&mut data, 1).first().copied().unwrap_or(0);
    let cut = seed(take(&mut data, 4));
    let mode = [
        Mode::Messages,
        Mode::Responses,
        Mode::NativeMessages,
        Mode::NativeResponses,
    ][usize::from(selector & 3)];
    let include_usage = selector & 0x80 != 0;
    let api = mode.api();
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let split = run(mode, include_usage, &chunks(data, cut));
    let all = split.all();
    let whole = run(mode, include_usage, &[data]);
    assert_eq!(
        show(&whole.all()),
        show(&all),
        "{mode:?}: the output depends on where the input was cut"
    );

    if mode.native() {
        check_native(mode, data, &split, include_usage);
        return;
    }
    // Whole events after every piece.
    let mut so_far = Vec::new();
    for piece in &split.pieces {
        so_far.extend_from_slice(piece);
        if let Err(e) = events(&so_far) {
            panic!("{mode:?}: {e}\noutput: {:?}", show(&so_far));
        }
    }
    // Exactly one terminal event, the last one, and the protocol around it.
    let evs = events(&all)
        .unwrap_or_else(|e| panic!("{mode:?} after finish(): {e}\noutput: {:?}", show(&all)));
    let terminals: Vec<usize> = evs
        .iter()
        .enumerate()
        .filter(|(_, e)| is_terminal(api, &e.name))
        .map(|(i, _)| i)
        .collect();
    assert!(
        terminals == [evs.len().wrapping_sub(1)],
        "{mode:?}: terminal events at {terminals:?} of {} events\noutput: {:?}",
        evs.len(),
        show(&all)
    );
    let protocol = match api {
        ClientApi::Messages => check_messages(&evs),
        _ => check_responses(&evs),
    };
    if let Err(e) = protocol {
        panic!("{mode:?}: {e}\noutput: {:?}", show(&all));
    }
});

//! `dialect::api(d).stream`: a provider's streamed answer, fed in pieces cut
//! anywhere, then `finish()` — for every dialect.
//!
//! Input: a selector byte (low six bits `% 6`: the dialect; bit 7: `include_usage`; bit 6,
//! Bedrock only: the stream is raw bytes rather than frame lines), four bytes
//! that seed the cutting, then the stream. For Bedrock the stream is, unless
//! raw, one frame per line: `<event-type> <JSON payload>`, or
//! `!<exception-type> <JSON payload>` for an exception frame; each line is
//! encoded as the binary event-stream frame Bedrock sends.
//!
//! Checked: a translated stream is whole `data: <JSON object>` events ending
//! with `data: [DONE]` after `finish()`, whatever the cuts (the same bytes come
//! out); once its `progress().end` is set nothing more comes out; `end` is set
//! after `finish()`. OpenAI's watch passes the provider's events through after
//! the first content: for it, a stream that fails ends with an error event an
//! SDK can read, and one that completes had a `[DONE]` event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::cost::UsageTail;
use switchyard_core::dialect::{self, Context, Dialect, StreamEnd, StreamTranslator};
use switchyard_core::eventstream;
use switchyard_core::sse;
use switchyard_fuzz::{check_openai_events, chunks, last_event_before_done, seed, take};

/// Encodes frame lines as Bedrock's binary frames.
fn bedrock_frames(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let at = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
        let kind = String::from_utf8_lossy(&line[..at]);
        let payload = line.get(at + 1..).unwrap_or_default();
        let frame = match kind.strip_prefix('!') {
            Some(exception) => eventstream::encode(
                &[
                    (":message-type", "exception"),
                    (":exception-type", exception),
                    (":content-type", "application/json"),
                ],
                payload,
            ),
            None => eventstream::encode(
                &[
                    (":message-type", "event"),
                    (":event-type", &kind),
                    (":content-type", "application/json"),
                ],
                payload,
            ),
        };
        out.extend(frame);
    }
    out
}

/// What a translator made of a stream: its output after each piece, and after
/// `finish()`.
struct Run {
    pieces: Vec<Vec<u8>>,
    finish: Vec<u8>,
    end: Option<StreamEnd>,
}

fn run(dialect: Dialect, ctx: &Context<'_>, pieces: &[&[u8]]) -> Run {
    let mut t: Box<dyn StreamTranslator> = dialect::api(dialect).stream(ctx);
    let mut out = Run {
        pieces: Vec::new(),
        finish: Vec::new(),
        end: None,
    };
    let mut before = t.progress();
    for piece in pieces {
        let bytes = t.feed(piece);
        let now = t.progress();
        if before.end.is_some() {
            assert!(bytes.is_empty(), "{dialect:?} sent bytes after its end");
            assert_eq!(now.end, before.end, "{dialect:?} changed how it ended");
        }
        assert!(
            now.content || !before.content,
            "{dialect:?} took content back"
        );
        before = now;
        out.pieces.push(bytes);
    }
    out.finish = t.finish();
    let after = t.progress();
    assert!(after.end.is_some(), "{dialect:?}: no end after finish()");
    if before.end.is_some() {
        assert!(out.finish.is_empty(), "{dialect:?} finished twice");
        assert_eq!(after.end, before.end);
    }
    assert!(
        t.finish().is_empty(),
        "{dialect:?}: a second finish() sent bytes"
    );
    assert!(
        t.feed(b"data: {}\n\n").is_empty(),
        "{dialect:?} sent bytes after finish()"
    );
    out.end = after.end;
    out
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let selector = take(&mut data, 1).first().copied().unwrap_or(0);
    let cut = seed(take(&mut data, 4));
    let dialect = switchyard_fuzz::dialect(selector);
    let ctx = Context {
        endpoint: switchyard_core::request::Endpoint::Chat,
        model: "model-1",
        created: 1_700_000_000,
        request_id: "req-1",
        include_usage: selector & 0x80 != 0,
        base64: false,
    };
    let framed;
    let stream = if dialect == Dialect::Bedrock && selector & 0x40 == 0 {
        framed = bedrock_frames(data);
        &framed[..]
    } else {
        data
    };

    let split = run(dialect, &ctx, &chunks(stream, cut));
    let all: Vec<u8> = split
        .pieces
        .concat()
        .into_iter()
        .chain(split.finish.clone())
        .collect();

    // The gateway reads the usage of whatever it sends.
    let mut tail = UsageTail::default();
    for piece in split.pieces.iter().chain([&split.finish]) {
        tail.feed(piece);
    }
    let _ = tail.usage();

    if dialect::api(dialect).speaks_openai() {
        match &split.end {
            Some(StreamEnd::Failed(..)) => {
                let last = last_event_before_done(&all).unwrap_or_else(|| {
                    panic!(
                        "a failed stream ends with an event and [DONE]: {:?}",
                        String::from_utf8_lossy(&all)
                    )
                });
                let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| {
                    panic!("the error event of a failed stream is not JSON ({e}): {last:?}\nwhole output: {:?}", String::from_utf8_lossy(&all))
                });
                assert!(v.get("error").is_some(), "{last}");
            }
            Some(StreamEnd::Complete) => {
                let events = sse::Parser::default().feed(data);
                assert!(
                    events.iter().any(|e| e.data == "[DONE]"),
                    "complete without a [DONE] event: {:?}",
                    String::from_utf8_lossy(data)
                );
            }
            _ => {}
        }
        return;
    }

    // Whole events after every piece, valid ones, ending with [DONE].
    let mut so_far = Vec::new();
    for piece in &split.pieces {
        so_far.extend_from_slice(piece);
        if let Err(e) = check_openai_events(&so_far, false) {
            panic!(
                "{dialect:?}: {e}\noutput: {:?}",
                String::from_utf8_lossy(&so_far)
            );
        }
    }
    if let Err(e) = check_openai_events(&all, true) {
        panic!(
            "{dialect:?} after finish(): {e}\noutput: {:?}",
            String::from_utf8_lossy(&all)
        );
    }

    // The same stream in one piece translates to the same bytes (a raw Bedrock
    // stream may differ: a corrupt frame drops what its piece completed).
    if dialect == Dialect::Bedrock && selector & 0x40 != 0 {
        return;
    }
    let whole = run(dialect, &ctx, &[stream]);
    let whole_all: Vec<u8> = whole
        .pieces
        .concat()
        .into_iter()
        .chain(whole.finish)
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&whole_all),
        String::from_utf8_lossy(&all),
        "{dialect:?}: the translation depends on where the stream was cut"
    );
    assert_eq!(whole.end, split.end);
});

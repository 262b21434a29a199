//! `sse::Parser::feed`: server-sent events cut anywhere.
//!
//! Input: four bytes that seed the cutting, then the stream. The events (and the
//! bytes left pending) must not depend on where the stream was cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::sse::Parser;
use switchyard_fuzz::{chunks, seed, take};

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let cut = seed(take(&mut data, 4));

    let mut whole = Parser::default();
    let expected = whole.feed(data);

    let mut split = Parser::default();
    let mut events = Vec::new();
    for piece in chunks(data, cut) {
        events.extend(split.feed(piece));
    }
    assert_eq!(
        events, expected,
        "events depend on where the stream was cut"
    );
    assert_eq!(split.pending(), whole.pending());
    assert!(whole.pending() <= data.len());
    // What is pending holds no complete event: feeding nothing finds none.
    assert!(split.feed(b"").is_empty());
    let pending = split.take_pending();
    assert_eq!(pending.len(), whole.pending());
    assert!(
        data.ends_with(&pending),
        "pending bytes are the stream's tail"
    );
    assert_eq!(split.pending(), 0);
});

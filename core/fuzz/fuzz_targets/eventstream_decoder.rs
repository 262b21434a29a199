//! `eventstream::Decoder::feed`: AWS's binary event stream (Bedrock
//! ConverseStream), cut anywhere.
//!
//! Input: one flag byte, four bytes that seed the cutting, then the stream. With
//! flag bit 0 set the CRCs of each frame are recomputed before decoding, so that
//! mutations reach the header parser instead of stopping at a checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::eventstream::{self, Decoder, HeaderValue, Message};
use switchyard_fuzz::{chunks, seed, take};

/// Rewrites the prelude and message CRC of every frame whose lengths fit.
fn fix_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while bytes.len() >= at + 16 {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let total = word(at) as usize;
        let prelude = eventstream::crc32(&bytes[at..at + 8]);
        bytes[at + 8..at + 12].copy_from_slice(&prelude.to_be_bytes());
        if total < 16 || bytes.len() < at + total {
            return;
        }
        let crc = eventstream::crc32(&bytes[at..at + total - 4]);
        bytes[at + total - 4..at + total].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let flags = take(&mut data, 1).first().copied().unwrap_or(0);
    let cut = seed(take(&mut data, 4));
    let mut stream = data.to_vec();
    if flags & 1 == 1 {
        fix_crcs(&mut stream);
    }

    let whole = Decoder::default().feed(&stream);

    let mut split = Decoder::default();
    let mut messages: Vec<Message> = Vec::new();
    let mut error = None;
    for piece in chunks(&stream, cut) {
        match split.feed(piece) {
            Ok(m) => messages.extend(m),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        // A frame's prelude is checked as soon as it is in: the decoder never
        // holds more than one frame of at most 16 MiB.
        assert!(split.pending() <= 16 * 1024 * 1024);
    }
    match (&whole, error) {
        (Ok(all), None) => assert_eq!(&messages, all, "messages depend on the cuts"),
        (Err(e), Some(split_err)) => {
            assert_eq!(e, &split_err, "errors depend on the cuts");
            // The decoder stays failed.
            assert_eq!(split.feed(b"x"), Err(split_err));
        }
        (whole, split_err) => {
            panic!("whole stream: {whole:?}, cut stream: error {split_err:?}")
        }
    }

    // Every string-headed message encodes back to what was decoded.
    for m in whole.unwrap_or_default() {
        let strings: Option<Vec<(&str, &str)>> = m
            .headers
            .iter()
            .map(|(n, v)| match v {
                HeaderValue::String(s) => Some((n.as_str(), s.as_str())),
                _ => None,
            })
            .collect();
        if let Some(headers) = strings {
            let again = Decoder::default()
                .feed(&eventstream::encode(&headers, &m.payload))
                .expect("an encoded message decodes");
            assert_eq!(again, vec![m]);
        }
    }
});

//! gRPC streams over the config-level HTTP stream of the ABI (the native host's
//! `grpc_stream_*`, which the fleet stream uses): the request headers of a gRPC
//! call, length-prefixed message framing, and the end of a stream as a gRPC
//! status — from the trailers, from trailers-only headers, or from how the
//! HTTP stream ended. Pure bookkeeping: `filters/switchyard.rs` starts, feeds
//! and resets the HTTP streams on Envoy's main thread.

use std::collections::HashMap;

use crate::api::HttpStreamEvent;

/// The largest message accepted from the control plane (a state carries the key
/// table and provider credentials; the control plane allows 64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// gRPC status codes used here.
pub const UNKNOWN: u32 = 2;
const RESOURCE_EXHAUSTED: u32 = 8;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// The request headers of a call to `/<service>/<method>`.
pub fn request_headers(service: &str, method: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (":method", b"POST".to_vec()),
        (":path", format!("/{service}/{method}").into_bytes()),
        (":authority", b"switchyard".to_vec()),
        ("content-type", b"application/grpc".to_vec()),
        ("te", b"trailers".to_vec()),
    ]
}

/// One message as sent on the wire: uncompressed flag, big-endian length, bytes.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(message);
    out
}

/// What a stream event means to the stream's owner, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A whole message (protobuf bytes).
    Message(Vec<u8>),
    /// The stream ended with this gRPC status (no event follows).
    Closed(u32),
}

#[derive(Debug, Default)]
struct Incoming {
    /// Bytes of messages not whole yet.
    buf: Vec<u8>,
    /// `grpc-status` as received (in trailers-only headers).
    status: Option<u32>,
}

/// The open streams, by the ABI's stream id.
#[derive(Debug, Default)]
pub struct Streams {
    open: HashMap<u64, Incoming>,
}

fn grpc_status(headers: &[(Vec<u8>, Vec<u8>)]) -> Option<u32> {
    headers
        .iter()
        .find(|(k, _)| k == b"grpc-status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok())
}

impl Streams {
    /// A stream just started.
    pub fn opened(&mut self, id: u64) {
        self.open.insert(id, Incoming::default());
    }

    /// Forgets a stream the owner ended itself (its later events are ignored).
    pub fn forget(&mut self, id: u64) {
        self.open.remove(&id);
    }

    /// Takes one event of stream `id`: whole messages, then `Closed` when it ended.
    pub fn on_event(&mut self, id: u64, event: &HttpStreamEvent<'_>) -> Vec<Delivery> {
        let Some(s) = self.open.get_mut(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let end = match *event {
            HttpStreamEvent::Headers(h, end) => {
                let http = h
                    .iter()
                    .find(|(k, _)| k == b":status")
                    .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u16>().ok());
                s.status = grpc_status(h);
                if http != Some(200) && s.status.is_none() {
                    // Not a gRPC answer (no route, an HTTP/1 server): try again later.
                    Some(UNAVAILABLE)
                } else {
                    end.then(|| s.status.unwrap_or(UNKNOWN))
                }
            }
            HttpStreamEvent::Data(bytes, end) => {
                s.buf.extend_from_slice(bytes);
                let mut failed = None;
                while s.buf.len() >= 5 {
                    let len = u32::from_be_bytes([s.buf[1], s.buf[2], s.buf[3], s.buf[4]]) as usize;
                    if s.buf[0] != 0 {
                        // Compressed: never asked for.
                        failed = Some(INTERNAL);
                        break;
                    }
                    if len > MAX_MESSAGE_BYTES {
                        failed = Some(RESOURCE_EXHAUSTED);
                        break;
                    }
                    if s.buf.len() < 5 + len {
                        break;
                    }
                    out.push(Delivery::Message(s.buf[5..5 + len].to_vec()));
                    s.buf.drain(..5 + len);
                }
                failed.or_else(|| end.then(|| s.status.unwrap_or(UNKNOWN)))
            }
            HttpStreamEvent::Trailers(t) => Some(grpc_status(t).or(s.status).unwrap_or(UNKNOWN)),
            HttpStreamEvent::Complete => Some(s.status.unwrap_or(UNKNOWN)),
            HttpStreamEvent::Reset(_) => Some(UNAVAILABLE),
        };
        if let Some(status) = end {
            self.open.remove(&id);
            out.push(Delivery::Closed(status));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn messages_are_cut_from_data_split_anywhere() {
        let mut s = Streams::default();
        s.opened(7);
        let ok = h(&[(":status", "200"), ("content-type", "application/grpc")]);
        assert!(
            s.on_event(7, &HttpStreamEvent::Headers(&ok, false))
                .is_empty()
        );
        let mut wire = frame(b"first");
        wire.extend(frame(b""));
        wire.extend(frame(b"third message"));
        // Split in the middle of the second prefix and of the third message.
        let (a, rest) = wire.split_at(12);
        let (b, c) = rest.split_at(9);
        let got: Vec<Delivery> = [a, b, c]
            .iter()
            .flat_map(|part| s.on_event(7, &HttpStreamEvent::Data(part, false)))
            .collect();
        assert_eq!(
            got,
            vec![
                Delivery::Message(b"first".to_vec()),
                Delivery::Message(Vec::new()),
                Delivery::Message(b"third message".to_vec()),
            ]
        );
        let t = h(&[("grpc-status", "7"), ("grpc-message", "no")]);
        assert_eq!(
            s.on_event(7, &HttpStreamEvent::Trailers(&t)),
            vec![Delivery::Closed(7)]
        );
        // Closed: what Envoy says next (complete) is not delivered again.
        assert!(s.on_event(7, &HttpStreamEvent::Complete).is_empty());
    }

    #[test]
    fn a_stream_ends_with_the_status_it_was_given_or_a_failure() {
        let mut s = Streams::default();
        // Trailers-only (the server refused at once).
        s.opened(1);
        let refused = h(&[(":status", "200"), ("grpc-status", "7")]);
        assert_eq!(
            s.on_event(1, &HttpStreamEvent::Headers(&refused, true)),
            vec![Delivery::Closed(7)]
        );
        // Not gRPC at all.
        s.opened(2);
        let html = h(&[(":status", "404")]);
        assert_eq!(
            s.on_event(2, &HttpStreamEvent::Headers(&html, false)),
            vec![Delivery::Closed(UNAVAILABLE)]
        );
        // Reset, compressed and oversized messages.
        s.opened(3);
        assert_eq!(
            s.on_event(3, &HttpStreamEvent::Reset(1)),
            vec![Delivery::Closed(UNAVAILABLE)]
        );
        s.opened(4);
        assert_eq!(
            s.on_event(4, &HttpStreamEvent::Data(&[1, 0, 0, 0, 1, 9], false)),
            vec![Delivery::Closed(INTERNAL)]
        );
        s.opened(5);
        assert_eq!(
            s.on_event(
                5,
                &HttpStreamEvent::Data(&[0, 0xff, 0xff, 0xff, 0xff], false)
            ),
            vec![Delivery::Closed(RESOURCE_EXHAUSTED)]
        );
        // A stream forgotten by its owner says nothing more.
        s.opened(6);
        s.forget(6);
        assert!(s.on_event(6, &HttpStreamEvent::Reset(0)).is_empty());
    }

    #[test]
    fn requests_name_the_method_and_frames_carry_the_length() {
        let hs = request_headers("switchyard.fleet.v1.Fleet", "Stream");
        assert!(hs.contains(&(":path", b"/switchyard.fleet.v1.Fleet/Stream".to_vec())));
        assert!(hs.contains(&("te", b"trailers".to_vec())));
        assert_eq!(frame(b"abc"), vec![0, 0, 0, 0, 3, b'a', b'b', b'c']);
    }
}

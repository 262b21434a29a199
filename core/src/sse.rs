//! Incremental server-sent-events parsing: chunks may split events anywhere.

/// One parsed event: its `event:` name (if any) and joined `data:` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Largest event the parser holds while waiting for its end: a provider that
/// sends more without ending it gets an event whose data is no JSON, which every
/// translator fails as a bad response, instead of the gateway's memory.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// What an event over [`MAX_EVENT_BYTES`] is read as.
pub const OVERSIZED: &str = "[event over 16 MiB without its end]";

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no event end, so that a large event
    /// arriving in many small chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl Parser {
    /// Feeds a chunk; returns every event completed by it.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_event_end(&self.buf, self.scanned) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            self.scanned = 0;
            if let Some(ev) = parse_event(&raw[..end]) {
                out.push(ev);
            }
        }
        // An event end (up to 4 bytes) may start in the last 3 bytes.
        self.scanned = self.buf.len().saturating_sub(3);
        if self.buf.len() > MAX_EVENT_BYTES {
            self.buf.clear();
            self.scanned = 0;
            out.push(Event {
                event: None,
                data: OVERSIZED.to_string(),
            });
        }
        out
    }

    /// Bytes received but not yet part of a complete event.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes the bytes received but not yet part of a complete event.
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }
}

/// The first event end at or after `from`: its position and length.
fn find_event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            return Some((i, 2));
        }
        if i + 3 < buf.len() && &buf[i..i + 4] == b"\r\n\r\n" {
            return Some((i, 4));
        }
        i += 1;
    }
    None
}

fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim_start().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_string()),
            }
        }
    }
    if event.is_none() && data.is_none() {
        return None;
    }
    Some(Event {
        event,
        data: data.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_never_ends_is_bounded() {
        let mut p = Parser::default();
        let piece = vec![b'x'; 1 << 20];
        let mut events = p.feed(b"data: ");
        for _ in 0..17 {
            events.extend(p.feed(&piece));
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, OVERSIZED);
        assert!(p.pending() < MAX_EVENT_BYTES);
        assert!(serde_json::from_str::<serde_json::Value>(OVERSIZED).is_err());
    }

    #[test]
    fn split_anywhere() {
        let stream = b"event: a\ndata: {\"x\":1}\n\n: comment\n\nevent: b\r\ndata: 2\r\n\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut p = Parser::default();
            let mut evs = p.feed(&stream[..cut]);
            evs.extend(p.feed(&stream[cut..]));
            assert_eq!(evs.len(), 3, "cut at {cut}");
            assert_eq!(evs[0].event.as_deref(), Some("a"));
            assert_eq!(evs[0].data, "{\"x\":1}");
            assert_eq!(evs[1].data, "2");
            assert_eq!(evs[2].data, "[DONE]");
            assert_eq!(p.pending(), 0);
        }
    }
}

//! The binary `application/vnd.amazon.eventstream` framing that Bedrock's ConverseStream
//! (and other AWS streaming APIs) answer with.
//!
//! A message is `total_length` (u32 BE) | `headers_length` (u32 BE) | `prelude_crc` (u32 BE,
//! the CRC-32 of the first 8 bytes) | headers | payload | `message_crc` (u32 BE, the CRC-32
//! of everything before it). `total_length` counts all of it. Each header is `name_len` (u8)
//! | name | `value_type` (u8) | value.

/// Bytes before the headers: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// The smallest message: a prelude and a message CRC, no headers, no payload.
const MIN_MESSAGE_LEN: u32 = 16;
/// The largest message accepted (AWS's own limit), so that a hostile length cannot make the
/// decoder buffer without bound.
const MAX_MESSAGE_LEN: u32 = 16 * 1024 * 1024;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The headers, in the order they were sent.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload (for Bedrock, a JSON document).
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of a string header (the first one of that name), e.g. `:event-type`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }
}

/// A header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2: one signed byte.
    Byte(i8),
    /// Type 3: i16 BE.
    Short(i16),
    /// Type 4: i32 BE.
    Int(i32),
    /// Type 5: i64 BE.
    Long(i64),
    /// Type 6: u16 BE length, then the bytes.
    Bytes(Vec<u8>),
    /// Type 7: u16 BE length, then UTF-8.
    String(String),
    /// Type 8: milliseconds since the Unix epoch, i64 BE.
    Timestamp(i64),
    /// Type 9: 16 bytes.
    Uuid([u8; 16]),
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The CRC of the 8 length bytes does not match the prelude's.
    #[error(
        "event stream prelude CRC mismatch: frame has {expected:#010x}, bytes give {computed:#010x}"
    )]
    PreludeCrc {
        /// The CRC the frame carries.
        expected: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The CRC of the message does not match its trailing CRC.
    #[error(
        "event stream message CRC mismatch: frame has {expected:#010x}, bytes give {computed:#010x}"
    )]
    MessageCrc {
        /// The CRC the frame carries.
        expected: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The total length is under 16 bytes or over 16 MiB, or the headers do not fit in it.
    #[error("event stream frame has bad lengths: total {total}, headers {headers}")]
    BadLength {
        /// The total length the prelude gives.
        total: u32,
        /// The headers length the prelude gives.
        headers: u32,
    },
    /// A header could not be parsed.
    #[error("event stream header is malformed: {0}")]
    BadHeader(&'static str),
}

/// Incremental decoder: feed bytes as they arrive (frames may be split anywhere); it returns
/// the messages they complete.
///
/// After an error the stream cannot be resynchronised: the decoder drops what it buffered
/// and every later [`Decoder::feed`] returns the same error.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    failed: Option<Error>,
}

impl Decoder {
    /// Appends `bytes` and returns the messages now complete, in order. On a corrupt frame
    /// it returns the error (messages completed earlier in the same call are dropped with it).
    /// A frame's prelude is checked as soon as its first 12 bytes are in, so an absurd
    /// length is refused before its body is buffered.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Message>, Error> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.buf.extend_from_slice(bytes);
        let mut messages = Vec::new();
        let mut start = 0;
        loop {
            match next_message(self.buf.get(start..).unwrap_or_default()) {
                Ok(Some((message, len))) => {
                    messages.push(message);
                    start += len;
                }
                Ok(None) => break,
                Err(err) => {
                    self.buf = Vec::new();
                    self.failed = Some(err.clone());
                    return Err(err);
                }
            }
        }
        self.buf.drain(..start);
        Ok(messages)
    }

    /// Bytes buffered that do not yet form a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn be_u32(bytes: &[u8]) -> Option<u32> {
    let array: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(array))
}

/// The first message of `buf` and its length, `None` if `buf` does not hold all of it yet.
fn next_message(buf: &[u8]) -> Result<Option<(Message, usize)>, Error> {
    let (Some(total), Some(headers_len), Some(prelude_crc), Some(lengths)) = (
        be_u32(buf),
        buf.get(4..).and_then(be_u32),
        buf.get(8..).and_then(be_u32),
        buf.get(..8),
    ) else {
        return Ok(None);
    };
    let computed = crc32(lengths);
    if computed != prelude_crc {
        return Err(Error::PreludeCrc {
            expected: prelude_crc,
            computed,
        });
    }
    if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&total)
        || headers_len > total - MIN_MESSAGE_LEN
    {
        return Err(Error::BadLength {
            total,
            headers: headers_len,
        });
    }
    let bad_length = Error::BadLength {
        total,
        headers: headers_len,
    };
    let total = usize::try_from(total).map_err(|_| bad_length.clone())?;
    let headers_len = usize::try_from(headers_len).map_err(|_| bad_length.clone())?;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let crc_at = total - 4;
    let (Some(covered), Some(message_crc)) =
        (frame.get(..crc_at), frame.get(crc_at..).and_then(be_u32))
    else {
        return Err(bad_length);
    };
    let computed = crc32(covered);
    if computed != message_crc {
        return Err(Error::MessageCrc {
            expected: message_crc,
            computed,
        });
    }
    let headers_end = PRELUDE_LEN + headers_len;
    let (Some(header_bytes), Some(payload)) = (
        covered.get(PRELUDE_LEN..headers_end),
        covered.get(headers_end..),
    ) else {
        return Err(bad_length);
    };
    let headers = parse_headers(header_bytes)?;
    Ok(Some((
        Message {
            headers,
            payload: payload.to_vec(),
        },
        total,
    )))
}

/// Reads the header block front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.0.len() {
            return Err(Error::BadHeader("header runs past the header block"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take(N)?
            .try_into()
            .map_err(|_| Error::BadHeader("header runs past the header block"))
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array()?))
    }
}

fn parse_headers(bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, Error> {
    let mut reader = Reader(bytes);
    let mut headers = Vec::new();
    while !reader.0.is_empty() {
        let name_len = reader.u8()?;
        if name_len == 0 {
            return Err(Error::BadHeader("empty header name"));
        }
        let name = std::str::from_utf8(reader.take(usize::from(name_len))?)
            .map_err(|_| Error::BadHeader("header name is not UTF-8"))?
            .to_owned();
        let value = match reader.u8()? {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(reader.array()?)),
            3 => HeaderValue::Short(i16::from_be_bytes(reader.array()?)),
            4 => HeaderValue::Int(i32::from_be_bytes(reader.array()?)),
            5 => HeaderValue::Long(i64::from_be_bytes(reader.array()?)),
            6 => {
                let len = reader.u16()?;
                HeaderValue::Bytes(reader.take(usize::from(len))?.to_vec())
            }
            7 => {
                let len = reader.u16()?;
                let text = std::str::from_utf8(reader.take(usize::from(len))?)
                    .map_err(|_| Error::BadHeader("string header value is not UTF-8"))?;
                HeaderValue::String(text.to_owned())
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(reader.array()?)),
            9 => HeaderValue::Uuid(reader.array()?),
            _ => return Err(Error::BadHeader("unknown header value type")),
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// Encodes a message with string headers (what Bedrock sends: `:event-type`,
/// `:content-type`, `:message-type`). Used by the mock provider and tests.
///
/// Header names longer than 255 bytes and values longer than 65,535 bytes are cut to fit
/// (Bedrock's never are); a payload that makes the message over 16 MiB is encoded but
/// [`Decoder`] refuses it.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_block = Vec::new();
    for (name, value) in headers {
        let name = name.as_bytes();
        let name = name.get(..usize::from(u8::MAX)).unwrap_or(name);
        let value = value.as_bytes();
        let value = value.get(..usize::from(u16::MAX)).unwrap_or(value);
        header_block.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        header_block.extend_from_slice(name);
        header_block.push(7);
        header_block
            .extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        header_block.extend_from_slice(value);
    }
    let total = PRELUDE_LEN + header_block.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(header_block.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_block);
    out.extend_from_slice(payload);
    let message_crc = crc32(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// CRC-32/ISO-HDLC lookup table (reflected polynomial 0xEDB88320).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3 / ISO-HDLC, as zlib's `crc32`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in bytes {
        crc = CRC_TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    // Known-good frames from botocore's tests/unit/test_eventstream.py (boto/botocore), the
    // same vectors as awslabs/aws-c-event-stream's test data (`encoded/positive/...`).
    const EMPTY_MESSAGE: &[u8] =
        b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff";
    const PAYLOAD_ONE_STR_HEADER: &[u8] = b"\x00\x00\x00\x3d\x00\x00\x00\x20\x07\xfd\x83\x96\
        \x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
    const ERROR_EVENT_MESSAGE: &[u8] = b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\
        \x0d:message-type\x07\x00\x05error\x0b:error-code\x07\x00\x04code\
        \x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d";
    const ALL_HEADERS_TYPES: &[u8] = b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c\
        \x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03\
        \x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05\
        \x016\x06\x00\x05bytes\x017\x07\x00\x04utf8\
        \x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef\
        \x63\x35\x36\x71";
    const INT8_HEADER: &[u8] =
        b"\x00\x00\x00\x17\x00\x00\x00\x07\x29\x86\x01\x58\x04byte\x02\xff\xc2\xf8\x69\xdc";
    const INT16_HEADER: &[u8] =
        b"\x00\x00\x00\x19\x00\x00\x00\x09\x71\x0e\x92\x3e\x05short\x03\xff\xff\xb2\x7c\xb6\xcc";
    const INT32_HEADER: &[u8] =
        b"\x00\x00\x00\x1d\x00\x00\x00\x0d\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff\x8b\x8e\x12\xeb";
    const INT64_HEADER: &[u8] =
        b"\x00\x00\x00\x1e\x00\x00\x00\x0e\x5d\x4a\xdb\x8d\x04long\x05\xff\xff\xff\xff\xff\xff\xff\xff\x4b\xc2\x32\xda";
    const CORRUPTED_PAYLOAD: &[u8] =
        b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfd\x52\x8c\x5a{'foo':'bar'\x8d\xc3\x65\x39\x36";
    const CORRUPTED_LENGTH: &[u8] =
        b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfd\x52\x8c\x5a{'foo':'bar'}\xc3\x65\x39\x36";

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, Error> {
        Decoder::default().feed(bytes)
    }

    fn string(s: &str) -> HeaderValue {
        HeaderValue::String(s.to_owned())
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn encodes_the_published_frames_exactly() {
        assert_eq!(encode(&[], b""), EMPTY_MESSAGE);
        assert_eq!(
            encode(&[("content-type", "application/json")], b"{'foo':'bar'}"),
            PAYLOAD_ONE_STR_HEADER
        );
        assert_eq!(
            encode(
                &[
                    (":message-type", "error"),
                    (":error-code", "code"),
                    (":error-message", "message")
                ],
                b""
            ),
            ERROR_EVENT_MESSAGE
        );
    }

    #[test]
    fn decodes_the_published_frames() {
        let messages = decode_all(PAYLOAD_ONE_STR_HEADER).unwrap();
        assert_eq!(
            messages,
            vec![Message {
                headers: vec![("content-type".to_owned(), string("application/json"))],
                payload: b"{'foo':'bar'}".to_vec(),
            }]
        );
        assert_eq!(messages[0].header("content-type"), Some("application/json"));
        assert_eq!(messages[0].header(":event-type"), None);

        let messages = decode_all(ERROR_EVENT_MESSAGE).unwrap();
        assert_eq!(messages[0].header(":message-type"), Some("error"));
        assert_eq!(messages[0].header(":error-code"), Some("code"));
        assert_eq!(messages[0].header(":error-message"), Some("message"));
        assert!(messages[0].payload.is_empty());

        let messages = decode_all(EMPTY_MESSAGE).unwrap();
        assert_eq!(
            messages,
            vec![Message {
                headers: vec![],
                payload: vec![]
            }]
        );
    }

    #[test]
    fn decodes_every_header_type() {
        let messages = decode_all(ALL_HEADERS_TYPES).unwrap();
        let expected = vec![
            ("0", HeaderValue::Bool(true)),
            ("1", HeaderValue::Bool(false)),
            ("2", HeaderValue::Byte(2)),
            ("3", HeaderValue::Short(3)),
            ("4", HeaderValue::Int(4)),
            ("5", HeaderValue::Long(5)),
            ("6", HeaderValue::Bytes(b"bytes".to_vec())),
            ("7", string("utf8")),
            ("8", HeaderValue::Timestamp(8)),
            ("9", HeaderValue::Uuid(*b"0123456789abcdef")),
        ];
        let expected: Vec<(String, HeaderValue)> = expected
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect();
        assert_eq!(
            messages,
            vec![Message {
                headers: expected,
                payload: vec![]
            }]
        );
        // A string header is found by `header`; other types are not strings.
        assert_eq!(messages[0].header("7"), Some("utf8"));
        assert_eq!(messages[0].header("6"), None);

        let mut all = Vec::new();
        for frame in [INT8_HEADER, INT16_HEADER, INT32_HEADER, INT64_HEADER] {
            all.extend_from_slice(frame);
        }
        let values: Vec<HeaderValue> = decode_all(&all)
            .unwrap()
            .into_iter()
            .map(|m| m.headers[0].1.clone())
            .collect();
        assert_eq!(
            values,
            vec![
                HeaderValue::Byte(-1),
                HeaderValue::Short(-1),
                HeaderValue::Int(-1),
                HeaderValue::Long(-1)
            ]
        );
    }

    fn bedrock_like_stream() -> (Vec<u8>, Vec<Message>) {
        let events = [
            ("messageStart", r#"{"role":"assistant"}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"Hel"}}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"text":"lo ✓"}}"#,
            ),
            ("messageStop", r#"{"stopReason":"end_turn"}"#),
        ];
        let mut bytes = Vec::new();
        let mut messages = Vec::new();
        for (event, payload) in events {
            let headers = [
                (":event-type", event),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ];
            bytes.extend_from_slice(&encode(&headers, payload.as_bytes()));
            messages.push(Message {
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), string(v)))
                    .collect(),
                payload: payload.as_bytes().to_vec(),
            });
        }
        bytes.extend_from_slice(&encode(&[], b""));
        messages.push(Message {
            headers: vec![],
            payload: vec![],
        });
        (bytes, messages)
    }

    #[test]
    fn round_trip_in_one_go() {
        let (bytes, expected) = bedrock_like_stream();
        let mut decoder = Decoder::default();
        assert_eq!(decoder.feed(&bytes).unwrap(), expected);
        assert_eq!(decoder.pending(), 0);
        assert_eq!(expected[1].header(":event-type"), Some("contentBlockDelta"));
    }

    #[test]
    fn round_trip_one_byte_at_a_time() {
        let (bytes, expected) = bedrock_like_stream();
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            got.extend(decoder.feed(std::slice::from_ref(b)).unwrap());
            assert!(decoder.pending() <= i + 1);
        }
        assert_eq!(got, expected);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn round_trip_split_everywhere() {
        let (bytes, expected) = bedrock_like_stream();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            let mut decoder = Decoder::default();
            let mut got = decoder.feed(a).unwrap();
            got.extend(decoder.feed(b).unwrap());
            assert_eq!(got, expected, "split at {split}");
        }
    }

    #[test]
    fn pending_counts_an_incomplete_frame() {
        let mut decoder = Decoder::default();
        assert!(
            decoder
                .feed(&PAYLOAD_ONE_STR_HEADER[..20])
                .unwrap()
                .is_empty()
        );
        assert_eq!(decoder.pending(), 20);
        assert_eq!(
            decoder.feed(&PAYLOAD_ONE_STR_HEADER[20..]).unwrap().len(),
            1
        );
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn corrupted_payload_fails_the_message_crc() {
        assert_eq!(
            decode_all(CORRUPTED_PAYLOAD),
            Err(Error::MessageCrc {
                expected: 0xc365_3936,
                computed: crc32(&CORRUPTED_PAYLOAD[..25])
            })
        );
        let mut frame = encode(&[(":event-type", "x")], b"payload");
        let at = frame.len() - 6;
        frame[at] ^= 0x01;
        assert!(matches!(decode_all(&frame), Err(Error::MessageCrc { .. })));
    }

    #[test]
    fn corrupted_prelude_fails_the_prelude_crc() {
        assert!(matches!(
            decode_all(CORRUPTED_LENGTH),
            Err(Error::PreludeCrc { .. })
        ));
        let mut frame = encode(&[], b"payload");
        frame[5] ^= 0x80;
        // Refused as soon as the prelude is in, before the rest of the frame arrives.
        let mut decoder = Decoder::default();
        assert!(matches!(
            decoder.feed(&frame[..12]),
            Err(Error::PreludeCrc { .. })
        ));
        // The decoder stays failed.
        assert!(matches!(
            decoder.feed(EMPTY_MESSAGE),
            Err(Error::PreludeCrc { .. })
        ));
        assert_eq!(decoder.pending(), 0);
    }

    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut bytes = total.to_be_bytes().to_vec();
        bytes.extend_from_slice(&headers.to_be_bytes());
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    #[test]
    fn absurd_lengths_are_refused_before_buffering() {
        for (total, headers) in [
            (15, 0),
            (0, 0),
            (MAX_MESSAGE_LEN + 1, 0),
            (u32::MAX, 0),
            (16, 1),
            (100, 85),
        ] {
            let mut decoder = Decoder::default();
            assert_eq!(
                decoder.feed(&prelude(total, headers)),
                Err(Error::BadLength { total, headers }),
                "{total}/{headers}"
            );
        }
        // The largest frame allowed is merely waited for.
        let mut decoder = Decoder::default();
        assert_eq!(decoder.feed(&prelude(MAX_MESSAGE_LEN, 0)).unwrap(), vec![]);
        assert_eq!(decoder.pending(), 12);
    }

    #[test]
    fn malformed_headers_are_refused() {
        // A frame whose CRCs are right but whose header block is not.
        fn frame(header_block: &[u8]) -> Vec<u8> {
            let total = u32::try_from(16 + header_block.len()).unwrap();
            let mut bytes = prelude(total, u32::try_from(header_block.len()).unwrap());
            bytes.extend_from_slice(header_block);
            let crc = crc32(&bytes);
            bytes.extend_from_slice(&crc.to_be_bytes());
            bytes
        }
        assert!(decode_all(&frame(b"\x01a\x07\x00\x01b")).is_ok());
        for block in [
            &b"\x01a\x0a"[..],            // unknown type
            b"\x01a\x07\x00\x05abc",      // string runs past the block
            b"\x05ab",                    // name runs past the block
            b"\x01a\x04\x00\x00",         // int runs past the block
            b"\x00\x07\x00\x00",          // empty name
            b"\x01a\x07\x00\x02\xff\xfe", // not UTF-8
        ] {
            assert!(
                matches!(decode_all(&frame(block)), Err(Error::BadHeader(_))),
                "{block:?}"
            );
        }
    }
}

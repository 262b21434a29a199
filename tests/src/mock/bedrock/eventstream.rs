//! The AWS event-stream message format (`application/vnd.amazon.eventstream`), as
//! AWS describes it: a prelude (total length and headers length, big-endian u32s,
//! and the prelude's CRC-32), headers (name length u8, name, value type u8,
//! value), the payload, and the CRC-32 of everything before it. Written for the
//! mock, checked against the test frames of AWS's own Python SDK (botocore).

/// The CRC-32 event-stream messages carry (IEEE 802.3, reflected, as zlib's).
pub(super) fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

/// A message with string headers (value type 7) and `payload`.
pub(super) fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = 12 + h.len() + payload.len() + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32(&m);
    m.extend_from_slice(&prelude_crc.to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    let message_crc = crc32(&m);
    m.extend_from_slice(&message_crc.to_be_bytes());
    m
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Headers in order; values that are not strings are rendered as text
    /// (booleans, integers in decimal, byte arrays and UUIDs in hex).
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Decodes the messages in `bytes` as a client would, checking both CRCs: a
/// message whose CRC is wrong is an `Err` and decoding goes on with the next one
/// (its length is known); a structural error is the last element.
pub fn decode(mut bytes: &[u8]) -> Vec<Result<Frame, String>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (step, frame) = match decode_one(bytes) {
            Ok(x) => x,
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        };
        out.push(frame);
        bytes = &bytes[step..];
    }
    out
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// One message: its length, and the frame or why it is not one.
fn decode_one(bytes: &[u8]) -> Result<(usize, Result<Frame, String>), String> {
    if bytes.len() < 16 {
        return Err(format!("{} bytes left, not a message", bytes.len()));
    }
    let (total, headers_len) = (be32(&bytes[0..4]), be32(&bytes[4..8]));
    if total < 16 || total > bytes.len() || headers_len > total - 16 {
        return Err(format!("bad lengths: total {total}, headers {headers_len}"));
    }
    if crc32(&bytes[..8]) != be32(&bytes[8..12]) as u32 {
        return Err("prelude CRC mismatch".into());
    }
    let message = &bytes[..total];
    if crc32(&message[..total - 4]) != be32(&message[total - 4..]) as u32 {
        return Ok((total, Err("message CRC mismatch".into())));
    }
    let mut h = &message[12..12 + headers_len];
    let mut headers = Vec::new();
    while !h.is_empty() {
        let name_len = usize::from(h[0]);
        let name = h.get(1..1 + name_len).ok_or("truncated header name")?;
        let name = String::from_utf8_lossy(name).into_owned();
        h = &h[1 + name_len..];
        let kind = *h.first().ok_or("missing header type")?;
        h = &h[1..];
        let fixed = |n: usize, h: &[u8]| h.get(..n).map(<[u8]>::to_vec).ok_or("truncated header value");
        let (value, used) = match kind {
            0 => ("true".to_string(), 0),
            1 => ("false".to_string(), 0),
            2..=5 | 8 => {
                let n = match kind {
                    2 => 1,
                    3 => 2,
                    4 => 4,
                    _ => 8,
                };
                let raw = fixed(n, h)?;
                let mut v: i64 = if raw[0] & 0x80 != 0 { -1 } else { 0 };
                for b in &raw {
                    v = (v << 8) | i64::from(*b);
                }
                (v.to_string(), n)
            }
            6 | 7 => {
                let len = usize::from(u16::from_be_bytes([
                    *h.first().ok_or("truncated header length")?,
                    *h.get(1).ok_or("truncated header length")?,
                ]));
                let raw = h.get(2..2 + len).ok_or("truncated header value")?;
                let v = if kind == 7 {
                    String::from_utf8_lossy(raw).into_owned()
                } else {
                    raw.iter().map(|b| format!("{b:02x}")).collect()
                };
                (v, 2 + len)
            }
            9 => (fixed(16, h)?.iter().map(|b| format!("{b:02x}")).collect(), 16),
            t => return Err(format!("unknown header type {t}")),
        };
        headers.push((name, value));
        h = &h[used..];
    }
    let payload = message[12 + headers_len..total - 4].to_vec();
    Ok((total, Ok(Frame { headers, payload })))
}

#[cfg(test)]
mod tests {
    use super::*;

    // botocore's tests/unit/test_eventstream.py.
    const EMPTY_MESSAGE: &[u8] = b"\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2H\xeb}\x98\xc8\xff";
    const PAYLOAD_ONE_STR_HEADER: &[u8] = b"\x00\x00\x00=\x00\x00\x00 \x07\xfd\x83\x96\x0ccontent-type\x07\x00\x10application/json{'foo':'bar'}\x8d\x9c\x08\xb1";
    const ERROR_EVENT_MESSAGE: &[u8] = b"\x00\x00\x00\x52\x00\x00\x00\x42\xbf\x23\x63\x7e\x0d:message-type\x07\x00\x05error\x0b:error-code\x07\x00\x04code\x0e:error-message\x07\x00\x07message\x6b\x6c\xea\x3d";
    const INT32_HEADER: &[u8] =
        b"\x00\x00\x00\x1d\x00\x00\x00\r\x83\xe3\xf0\xe7\x07integer\x04\xff\xff\xff\xff\x8b\x8e\x12\xeb";
    const ALL_HEADERS_TYPES: &[u8] = b"\x00\x00\x00\x62\x00\x00\x00\x52\x03\xb5\xcb\x9c\x010\x00\x011\x01\x012\x02\x02\x013\x03\x00\x03\x014\x04\x00\x00\x00\x04\x015\x05\x00\x00\x00\x00\x00\x00\x00\x05\x016\x06\x00\x05bytes\x017\x07\x00\x04utf8\x018\x08\x00\x00\x00\x00\x00\x00\x00\x08\x019\x090123456789abcdef\x63\x35\x36\x71";
    const CORRUPTED_PAYLOAD: &[u8] = b"\x00\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'\x8d\xc3e96";
    const CORRUPTED_LENGTH: &[u8] = b"\x01\x00\x00\x1d\x00\x00\x00\x00\xfdR\x8cZ{'foo':'bar'}\xc3e96";

    #[test]
    fn encodes_botocore_frames() {
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
    fn decodes_botocore_frames() {
        let mut all = Vec::new();
        for m in [
            EMPTY_MESSAGE,
            PAYLOAD_ONE_STR_HEADER,
            ERROR_EVENT_MESSAGE,
            INT32_HEADER,
            ALL_HEADERS_TYPES,
        ] {
            all.extend_from_slice(m);
        }
        let frames: Vec<Frame> = decode(&all).into_iter().map(|f| f.unwrap()).collect();
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[1].header("content-type"), Some("application/json"));
        assert_eq!(frames[1].payload, b"{'foo':'bar'}");
        assert_eq!(frames[2].header(":error-message"), Some("message"));
        assert_eq!(frames[3].header("integer"), Some("-1"));
        let h = &frames[4];
        assert_eq!(
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"].map(|n| h.header(n).unwrap().to_string()),
            [
                "true",
                "false",
                "2",
                "3",
                "4",
                "5",
                "6279746573",
                "utf8",
                "8",
                "30313233343536373839616263646566"
            ]
        );
        assert_eq!(decode(CORRUPTED_PAYLOAD), vec![Err("message CRC mismatch".to_string())]);
        assert!(decode(CORRUPTED_LENGTH)[0].is_err());
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}

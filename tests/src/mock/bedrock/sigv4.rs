//! AWS Signature Version 4, verifier side, written from AWS's description of the
//! signing process ("Create a signed AWS API request") and checked against AWS's
//! published SigV4 test suite: the canonical request (method, normalised path
//! with each segment URI-encoded again, sorted and encoded query, trimmed and
//! sorted signed headers, the list of signed headers, the hex SHA-256 of the
//! body), the string to sign, the derived signing key and the signature.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// What a signature covers, as the request arrived.
pub(super) struct Signed<'a> {
    pub(super) method: &'a str,
    /// The path as sent (percent-encoded), without the query.
    pub(super) path: &'a str,
    /// The query as sent, without `?`.
    pub(super) query: &'a str,
    /// Every header, lower-case names, in arrival order.
    pub(super) headers: &'a [(String, String)],
    pub(super) body: &'a [u8],
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug)]
pub(super) struct Authorization<'a> {
    pub(super) access_key_id: &'a str,
    /// `YYYYMMDD`.
    pub(super) date: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
    pub(super) terminator: &'a str,
    pub(super) signed_headers: Vec<&'a str>,
    pub(super) signature: &'a str,
}

impl Authorization<'_> {
    /// `date/region/service/aws4_request`.
    pub(super) fn scope(&self) -> String {
        format!("{}/{}/{}/{}", self.date, self.region, self.service, self.terminator)
    }
}

/// Parses what follows `AWS4-HMAC-SHA256 `; the error is AWS's
/// `IncompleteSignatureException` message.
pub(super) fn parse(fields: &str) -> Result<Authorization<'_>, String> {
    let field = |name: &str| {
        fields
            .split(',')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
            .ok_or(format!("Authorization header requires '{name}' parameter."))
    };
    let (credential, signed, signature) = (field("Credential")?, field("SignedHeaders")?, field("Signature")?);
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(format!(
            "Authorization header requires 'Credential' parameter of the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, not '{credential}'."
        ));
    };
    Ok(Authorization {
        access_key_id,
        date,
        region,
        service,
        terminator,
        signed_headers: signed.split(';').collect(),
        signature,
    })
}

const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn uri_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded.
pub(super) fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The canonical URI: the path normalised (no empty, `.` or `..` segments), each
/// segment of it as sent URI-encoded once more, as every service but S3 wants.
fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(
        &segments
            .iter()
            .map(|s| uri_encode(s.as_bytes()))
            .collect::<Vec<_>>()
            .join("/"),
    );
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// The canonical query: each name and value decoded then encoded, sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (uri_encode(&percent_decode(k)), uri_encode(&percent_decode(v)))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A header value trimmed, its runs of spaces made one.
fn trimmed(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes a key of any length.
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The canonical request of `req` over the headers `signed` names.
pub(super) fn canonical_request(req: &Signed, signed: &[&str]) -> String {
    let mut names: Vec<String> = signed.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let headers: String = names
        .iter()
        .map(|n| {
            let values: Vec<String> = req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| trimmed(v))
                .collect();
            format!("{n}:{}\n", values.join(","))
        })
        .collect();
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{}",
        req.method,
        canonical_uri(req.path),
        canonical_query(req.query),
        names.join(";"),
        sha256_hex(req.body)
    )
}

/// The string to sign for a canonical request.
pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

/// The hex signature of `string_to_sign` with the key derived from `secret`.
pub(super) fn signature(secret: &str, date: &str, region: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of an ISO 8601 basic UTC time, `YYYYMMDDTHHMMSSZ`.
pub(super) fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// `secs` since the epoch as `YYYYMMDDTHHMMSSZ`.
pub(super) fn amz_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // AWS SigV4 test suite (aws-sig-v4-test-suite): its credentials and time.
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const SCOPE: &str = "20150830/us-east-1/service/aws4_request";
    const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    fn headers(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), DATE.to_string()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    fn sign(req: &Signed, signed: &[&str]) -> (String, String, String) {
        let canonical = canonical_request(req, signed);
        let sts = string_to_sign(DATE, SCOPE, &canonical);
        let sig = signature(SECRET, "20150830", "us-east-1", "service", &sts);
        (canonical, sts, sig)
    }

    /// get-vanilla: its canonical request, string to sign and signature.
    #[test]
    fn get_vanilla() {
        let h = headers(&[]);
        let req = Signed {
            method: "GET",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        let (canonical, sts, sig) = sign(&req, &["host", "x-amz-date"]);
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    }

    /// post-x-www-form-urlencoded: a signed content type and a hashed body.
    #[test]
    fn post_x_www_form_urlencoded() {
        let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let req = Signed {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"Param1=value1",
        };
        let (canonical, sts, sig) = sign(&req, &["content-type", "host", "x-amz-date"]);
        assert!(canonical.ends_with("9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"));
        assert!(sts.ends_with("42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281"));
        assert_eq!(sig, "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
    }

    /// post-sts-header-before: a session token signed as a header.
    #[test]
    fn post_sts_header_before() {
        let h = headers(&[("x-amz-security-token", TOKEN)]);
        let req = Signed {
            method: "POST",
            path: "/",
            query: "",
            headers: &h,
            body: b"",
        };
        let (_, sts, sig) = sign(&req, &["host", "x-amz-date", "x-amz-security-token"]);
        assert!(sts.ends_with("c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6"));
        assert_eq!(sig, "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead");
    }

    /// get-vanilla-query-order-key-case, get-slashes, get-relative-relative.
    #[test]
    fn query_order_and_path_normalisation() {
        let h = headers(&[]);
        let req = Signed {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &h,
            body: b"",
        };
        assert_eq!(
            sign(&req, &["host", "x-amz-date"]).2,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
        assert_eq!(canonical_uri("//example//"), "/example/");
        assert_eq!(canonical_uri("/example1/example2/../.."), "/");
        // Bedrock's model ids: the sent `%3A` is canonicalised as `%253A`.
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
    }

    #[test]
    fn authorization_header() {
        let a = parse("Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa0").unwrap();
        assert_eq!(
            (a.access_key_id, a.region, a.service),
            ("AKIDEXAMPLE", "us-east-1", "service")
        );
        assert_eq!(a.scope(), SCOPE);
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        assert!(parse("Credential=A/b/c/d/aws4_request, Signature=00").is_err());
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date(DATE), Some(1_440_938_160));
        assert_eq!(amz_date(1_440_938_160), DATE);
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(parse_amz_date("20240229T235959Z"), Some(1_709_251_199));
        assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
        assert_eq!(parse_amz_date("2015-08-30T12:36:00Z"), None);
    }
}

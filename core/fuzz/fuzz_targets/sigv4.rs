//! SigV4 canonicalisation and signing (`sigv4::canonical_request`,
//! `sigv4::authorization`) of arbitrary methods, paths, queries, headers and
//! bodies.
//!
//! Input: an HTTP request as text: `METHOD\nPATH?QUERY\n`, then header lines
//! `name:value` up to an empty line, then the body. `x-amz-date`, when given,
//! is also the signing date.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::sigv4::{self, Credentials, Request};

const CREDS: Credentials<'static> = Credentials {
    access_key_id: "AKIDEXAMPLE",
    secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    session_token: None,
};

fn line<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let at = data.iter().position(|b| *b == b'\n')?;
    let (head, rest) = data.split_at(at);
    *data = &rest[1..];
    Some(head)
}

/// Unreserved characters and `%XX` escapes (with `extra` allowed as well).
fn encoded(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if b[i].is_ascii_alphanumeric() || b"-._~".contains(&b[i]) || extra.contains(&b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let (Some(method), Some(path)) = (line(&mut data), line(&mut data)) else {
        return;
    };
    let (method, path) = (
        String::from_utf8_lossy(method),
        String::from_utf8_lossy(path),
    );
    let mut owned = Vec::new();
    while let Some(l) = line(&mut data) {
        if l.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(l).into_owned();
        let (name, value) = l.split_once(':').unwrap_or((&l, ""));
        owned.push((name.to_string(), value.to_string()));
    }
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let date = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
        .map_or("20150830T123600Z", |(_, v)| v);
    let req = Request {
        method: &method,
        path: &path,
        headers: &headers,
        body: data,
    };

    let canonical = sigv4::canonical_request(&req);
    let lines: Vec<&str> = canonical.split('\n').collect();
    let method_lines = method.split('\n').count();
    let uri = lines[method_lines];
    let query = lines[method_lines + 1];
    assert!(
        uri.starts_with('/') && encoded(uri, b"/"),
        "canonical URI {uri:?}"
    );
    assert!(encoded(query, b"=&"), "canonical query {query:?}");
    let hash = lines[lines.len() - 1];
    assert_eq!(hash, sigv4::sha256_hex(data));
    // The canonical query is canonical: canonicalising it again changes nothing.
    let again = sigv4::canonical_request(&Request {
        method: "GET",
        path: &format!("/?{query}"),
        headers: &[],
        body: b"",
    });
    assert_eq!(again.split('\n').nth(2), Some(query), "query {:?}", path);

    let auth = sigv4::authorization(&req, &CREDS, "us-east-1", "bedrock", date);
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{auth}"
    );
    let signature = auth
        .rsplit_once("Signature=")
        .map(|(_, s)| s)
        .unwrap_or_default();
    assert!(
        signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
        "{auth}"
    );
    let secs = data
        .iter()
        .take(8)
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let stamp = sigv4::amz_date(secs);
    assert!(stamp.ends_with('Z') && stamp.len() >= 16, "{stamp}");
    assert!(sigv4::encode_segment(&path).bytes().all(|b| b != b'/'));
});

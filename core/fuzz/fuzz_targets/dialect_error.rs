//! `dialect::api(d).classify_error`: a provider's error answer (status, error
//! type header, body) into a failure class, for every dialect.
//!
//! Input: a selector byte (low six bits `% 6`: the dialect), the status (two bytes, big
//! endian), a length byte `n` (255: no error-type header), `n` bytes of the
//! header's value, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_core::dialect;
use switchyard_core::failure::{FailureClass, scrub};
use switchyard_fuzz::take;

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let dialect = switchyard_fuzz::dialect(take(&mut data, 1).first().copied().unwrap_or(0));
    let status = match take(&mut data, 2) {
        [hi, lo] => u16::from_be_bytes([*hi, *lo]),
        _ => 500,
    };
    let header_len = take(&mut data, 1).first().copied().unwrap_or(255);
    let header = (header_len != 255)
        .then(|| String::from_utf8_lossy(take(&mut data, usize::from(header_len))).into_owned());
    let api = dialect::api(dialect);
    let (class, message) = api.classify_error(status, header.as_deref(), data);
    assert_eq!(
        class.is_none(),
        FailureClass::from_status(status).is_none(),
        "{dialect:?} status {status}: a class exactly when the status is an error"
    );
    if let Some(class) = class {
        // The router retries by status: every class has one.
        let canonical = class.canonical_status(status);
        assert!((400..=599).contains(&canonical), "{class:?} → {canonical}");
        assert_eq!(FailureClass::parse(class.as_str()), Some(class));
    }
    if let Some(m) = message {
        // Messages reach clients and logs scrubbed.
        let _ = scrub(&m);
    }
});

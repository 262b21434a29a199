//! How long to leave a target alone after it said so: `Retry-After` (seconds or
//! HTTP date) and the providers' rate-limit reset headers.

/// Longest cool-down honoured from a provider's headers.
pub const MAX_COOLDOWN_MS: u64 = 10 * 60 * 1000;

/// Milliseconds until the provider accepts requests again, from its response
/// headers (`get` reads one, lower-case name); `None` when it did not say.
pub fn from_headers(get: impl Fn(&str) -> Option<String>, now_ms: u64) -> Option<u64> {
    let retry_after = get("retry-after").and_then(|v| {
        let v = v.trim().to_string();
        match v.parse::<f64>() {
            Ok(secs) if secs >= 0.0 => Some((secs * 1000.0) as u64),
            Ok(_) => None,
            Err(_) => http_date_ms(&v).map(|at| at.saturating_sub(now_ms)),
        }
    });
    let openai = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| get(h).and_then(|v| go_duration_ms(v.trim())))
        .max();
    let anthropic = [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
    ]
    .iter()
    .filter_map(|h| {
        get(h)
            .and_then(|v| rfc3339_ms(v.trim()))
            .map(|at| at.saturating_sub(now_ms))
    })
    .max();
    retry_after
        .or(openai)
        .or(anthropic)
        .map(|ms| ms.min(MAX_COOLDOWN_MS))
}

/// `1h2m3s`, `6m0s`, `1.5s`, `20ms` (OpenAI's reset headers).
pub fn go_duration_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3_600_000.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1.0
            }
            'm' => 60_000.0,
            's' => 1000.0,
            _ => return None,
        };
        total += n * unit;
    }
    if !num.is_empty() {
        return None;
    }
    Some(total as u64)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: f64) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s >= 61.0 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60;
    u64::try_from(secs)
        .ok()
        .map(|s0| s0 * 1000 + (s * 1000.0) as u64)
}

/// IMF-fixdate, e.g. `Wed, 21 Oct 2015 07:28:00 GMT`.
pub fn http_date_ms(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    to_ms(year.parse().ok()?, mo, day.parse().ok()?, h, mi, sec as f64)
}

/// RFC 3339 in UTC, e.g. `2024-05-01T12:00:30Z` (fractional seconds allowed).
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h = t.next()?.parse().ok()?;
    let mi = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    to_ms(y, mo, day, h, mi, sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_445_412_470_000; // 2015-10-21T07:27:50Z

    #[test]
    fn retry_after_forms() {
        let h = |v: &'static str| move |k: &str| (k == "retry-after").then(|| v.to_string());
        assert_eq!(from_headers(h("2"), NOW), Some(2000));
        assert_eq!(from_headers(h("0.5"), NOW), Some(500));
        assert_eq!(
            from_headers(h("Wed, 21 Oct 2015 07:28:00 GMT"), NOW),
            Some(10_000)
        );
        assert_eq!(from_headers(h("99999"), NOW), Some(MAX_COOLDOWN_MS));
        assert_eq!(from_headers(h("soon"), NOW), None);
        assert_eq!(from_headers(|_| None, NOW), None);
    }

    #[test]
    fn provider_reset_headers() {
        let openai = |k: &str| match k {
            "x-ratelimit-reset-requests" => Some("1m2.5s".to_string()),
            "x-ratelimit-reset-tokens" => Some("20ms".to_string()),
            _ => None,
        };
        assert_eq!(from_headers(openai, NOW), Some(62_500));
        let anthropic = |k: &str| {
            (k == "anthropic-ratelimit-requests-reset").then(|| "2015-10-21T07:28:05Z".to_string())
        };
        assert_eq!(from_headers(anthropic, NOW), Some(15_000));
        assert_eq!(go_duration_ms("1h"), Some(3_600_000));
        assert_eq!(go_duration_ms("5"), None);
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    }
}

//! What the fuzz targets share: how an input is cut into the pieces a network
//! delivers, the checks of a translated OpenAI event stream, the switch for
//! known findings, and an allocator that turns an outsized allocation into a
//! finding.
//!
//! Each target (`fuzz_targets/*.rs`) documents the layout of its input; the
//! corpora under `corpus/<target>/` follow it (`seed.py` writes the seeds).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard_core::dialect::Dialect;

// === bounded allocation ===

/// Largest single allocation a target may make. Inputs are at most a few KiB
/// (`-max_len`), so anything near this is an amplification bug: a length read
/// from the input and trusted, or output growing faster than the input.
pub const MAX_ALLOCATION: usize = 64 * 1024 * 1024;
/// Most bytes a target may hold allocated at once (libFuzzer's own memory is
/// not counted: it allocates through C++'s `new`).
pub const MAX_LIVE: usize = 256 * 1024 * 1024;

/// The system allocator, with [`MAX_ALLOCATION`] and [`MAX_LIVE`] enforced:
/// libFuzzer's `-malloc_limit_mb` needs a sanitizer's malloc hooks, which a
/// build without AddressSanitizer does not have.
pub struct Bounded;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn over_limit(size: usize) -> ! {
    // No allocation from here on: write straight to stderr, then abort so
    // libFuzzer saves the input as a crash.
    let msg: &[u8] = if size > MAX_ALLOCATION {
        b"==fuzz== allocation over MAX_ALLOCATION (64 MiB)\n"
    } else {
        b"==fuzz== live allocations over MAX_LIVE (256 MiB)\n"
    };
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg);
    std::process::abort()
}

fn account(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    if size > MAX_ALLOCATION || live > MAX_LIVE {
        over_limit(size);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        account(new_size);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

// === input layout ===

/// The dialects, in the order a selector byte picks them ([`dialect`]).
pub const DIALECTS: [Dialect; 6] = [
    Dialect::Openai,
    Dialect::AzureOpenai,
    Dialect::Anthropic,
    Dialect::Gemini,
    Dialect::Vertex,
    Dialect::Bedrock,
];

/// The dialect a selector byte names: its low six bits `% 6` (targets use the
/// two high bits as flags).
pub fn dialect(selector: u8) -> Dialect {
    DIALECTS[usize::from(selector & 0x3f) % DIALECTS.len()]
}

/// Splits `n` leading bytes off `data` (fewer when it is shorter).
pub fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

/// Cuts `data` into the pieces a network might deliver, driven by `seed`: mostly
/// a few bytes, sometimes one, sometimes hundreds, so that every boundary
/// (inside a UTF-8 character, a `\r\n`, a frame length) gets exercised.
pub fn chunks(data: &[u8], seed: u32) -> Vec<&[u8]> {
    let mut state = u64::from(seed) | 1 << 32;
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // xorshift64: cheap, and the same seed always cuts the same way.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = match state % 8 {
            0 => 1,
            1..=5 => 1 + (state >> 8) as usize % 16,
            6 => 1 + (state >> 8) as usize % 512,
            _ => rest.len(),
        };
        out.push(take(&mut rest, len));
    }
    out
}

/// A little-endian `u32` from up to four bytes.
pub fn seed(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .take(4)
        .enumerate()
        .fold(0, |acc, (i, b)| acc | u32::from(*b) << (8 * i))
}

// === known findings ===

/// Whether open finding `n` of docs/fuzzing.md fails a target. By default none
/// does: a target lets exactly the inputs of its open findings through, so that
/// a campaign looks past them for new ones. `FUZZ_STRICT=1` (or `all`) fails on
/// every one, `FUZZ_STRICT=5,7` on those: replay a finding's reproducer (the
/// seed named after it) against a fix that way.
pub fn strict(n: u32) -> bool {
    static STRICT: OnceLock<Option<Vec<u32>>> = OnceLock::new();
    let set = STRICT.get_or_init(|| {
        let v = std::env::var("FUZZ_STRICT").unwrap_or_default();
        match v.trim() {
            "" | "0" => Some(Vec::new()),
            "1" | "all" => None,
            list => Some(
                list.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .collect(),
            ),
        }
    });
    set.as_ref().is_none_or(|only| only.contains(&n))
}

// === translated streams ===

/// Checks that `out` is what an OpenAI client can read: whole SSE events, each
/// one `data: ` line whose payload is a JSON object, or `[DONE]`, which ends the
/// stream (`done_required`: it must be there).
pub fn check_openai_events(out: &[u8], done_required: bool) -> Result<(), String> {
    let text = std::str::from_utf8(out).map_err(|e| format!("output is not UTF-8: {e}"))?;
    if text.is_empty() {
        return if done_required {
            Err("no `[DONE]`".into())
        } else {
            Ok(())
        };
    }
    let Some(body) = text.strip_suffix("\n\n") else {
        return Err(format!("output does not end with a whole event: {text:?}"));
    };
    let events: Vec<&str> = body.split("\n\n").collect();
    for (i, event) in events.iter().enumerate() {
        let Some(payload) = event.strip_prefix("data: ") else {
            return Err(format!("event {i} is not one `data: ` line: {event:?}"));
        };
        if payload.contains('\n') || payload.contains('\r') {
            return Err(format!("event {i} has more than one line: {event:?}"));
        }
        if payload == "[DONE]" {
            if i + 1 != events.len() {
                return Err(format!("event {i} is `[DONE]` but events follow it"));
            }
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(payload) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => return Err(format!("event {i} is JSON but no object: {other}")),
            Err(e) => return Err(format!("event {i} is not JSON ({e}): {payload:?}")),
        }
    }
    if done_required && events.last() != Some(&"data: [DONE]") {
        return Err("the stream does not end with `data: [DONE]`".into());
    }
    Ok(())
}

/// The JSON payload of the last event before `[DONE]` in `out`, read the way an
/// OpenAI SDK reads it (a spec SSE parser: lines are joined, whatever came before).
pub fn last_event_before_done(out: &[u8]) -> Option<String> {
    let mut parser = switchyard_core::sse::Parser::default();
    let events = parser.feed(out);
    let n = events.len();
    (n >= 2 && events[n - 1].data == "[DONE]").then(|| events[n - 2].data.clone())
}

//! Cost accounting per request: every attempt that a provider may bill is counted,
//! hedged attempts that lost the race included.
//!
//! Token counts come from the answer's `usage` (found at the end of the OpenAI-format
//! body or stream the client receives). An attempt without a `usage` — a hedge that
//! was cancelled, a stream the client did not ask usage for — is charged its prompt
//! estimated from the request size ([`estimated_prompt_tokens`]), and counted as an
//! estimate.

use serde::Deserialize;

use crate::config::Price;

/// Tokens an answer reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens (`input_tokens` in Anthropic's and the Responses
    /// API's usage).
    #[serde(default, alias = "input_tokens")]
    pub prompt_tokens: u64,
    /// Completion (output) tokens (`output_tokens` there).
    #[serde(default, alias = "output_tokens")]
    pub completion_tokens: u64,
}

/// Prompt tokens guessed from the request body's size (about four bytes of JSON
/// per token for English chat requests; an upper estimate for the JSON overhead).
pub fn estimated_prompt_tokens(request_bytes: usize) -> u64 {
    (request_bytes as u64).div_ceil(4)
}

/// Cost of `usage` at `price`, in millionths of the price's currency unit (prices
/// are per million tokens, so this is tokens × price).
pub fn micros(price: &Price, usage: Usage) -> u64 {
    let c =
        usage.prompt_tokens as f64 * price.input + usage.completion_tokens as f64 * price.output;
    c.round().max(0.0) as u64
}

/// Keeps the last bytes of an answer (JSON body or event stream, OpenAI format) to
/// find its `usage` at the end, without holding the whole answer.
#[derive(Debug, Default)]
pub struct UsageTail {
    tail: Vec<u8>,
}

impl UsageTail {
    /// How much of the answer's end is kept: a `usage` object with its details fits.
    const KEEP: usize = 2048;

    /// Feeds the next bytes of the answer.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.len() >= Self::KEEP {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - Self::KEEP..]);
            return;
        }
        self.tail.extend_from_slice(bytes);
        let excess = self.tail.len().saturating_sub(Self::KEEP);
        self.tail.drain(..excess);
    }

    /// The last `"usage": {…}` object in what was fed.
    pub fn usage(&self) -> Option<Usage> {
        const KEY: &[u8] = b"\"usage\"";
        let at = self.tail.windows(KEY.len()).rposition(|w| w == KEY)?;
        let rest = &self.tail[at + KEY.len()..];
        let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = rest[colon..].strip_prefix(b":")?;
        let mut values = serde_json::Deserializer::from_slice(rest).into_iter::<Usage>();
        values.next()?.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_usage_in_json_and_streams_across_chunks() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
        let mut t = UsageTail::default();
        for chunk in body.chunks(5) {
            t.feed(chunk);
        }
        assert_eq!(
            t.usage(),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 7
            })
        );
        // A long stream: only the end is kept, and the last usage wins.
        let mut t = UsageTail::default();
        for _ in 0..500 {
            t.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\n");
        }
        assert_eq!(t.usage(), None);
        t.feed(b"data: {\"choices\":[],\"usage\": {\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n");
        assert_eq!(t.usage().map(|u| u.completion_tokens), Some(4));
        t.feed(&[b'x'; 5000]);
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let p = Price {
            input: 2.5,
            output: 10.0,
        };
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 100,
        };
        // 1000 × 2.5 + 100 × 10 = 3500 micro-units = 0.0035 units.
        assert_eq!(micros(&p, u), 3500);
        assert_eq!(estimated_prompt_tokens(401), 101);
    }
}

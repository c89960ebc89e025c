//! Logging what a client chose, safely: strings clipped to a short prefix
//! with their length, and repeated warnings rate-limited, so one client
//! cannot fill the disk through the log.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest prefix of a client-chosen string written to a log line.
pub(crate) const CLIP_BYTES: usize = 128;

/// How often one kind of warning is written, at most (the rest are counted).
const WARN_EVERY: Duration = Duration::from_secs(1);

/// A client-chosen string for a log line: itself when short, else its first
/// [`CLIP_BYTES`] bytes (on a character boundary) and its length.
///
pub(crate) fn clip(text: &str) -> Clipped<'_> {
    Clipped(text)
}

/// See [`clip`].
pub(crate) struct Clipped<'a>(&'a str);

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        if text.len() <= CLIP_BYTES {
            return f.write_str(text);
        }
        let mut end = CLIP_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} bytes)", &text[..end], text.len())
    }
}

impl fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

struct Kind {
    what: &'static str,
    last: Instant,
    suppressed: u64,
}

static KINDS: Mutex<Vec<Kind>> = Mutex::new(Vec::new());

/// A warning of kind `what` with `details`, at most once per second per
/// kind; the next one written says how many were left out.
pub(crate) fn rate_limited_warn(what: &'static str, details: fmt::Arguments<'_>) {
    let now = Instant::now();
    let suppressed = {
        let mut kinds = KINDS.lock().unwrap_or_else(|e| e.into_inner());
        match kinds.iter_mut().find(|k| k.what == what) {
            Some(kind) if now.duration_since(kind.last) < WARN_EVERY => {
                kind.suppressed += 1;
                return;
            }
            Some(kind) => {
                kind.last = now;
                std::mem::take(&mut kind.suppressed)
            }
            None => {
                kinds.push(Kind {
                    what,
                    last: now,
                    suppressed: 0,
                });
                0
            }
        }
    };
    if suppressed > 0 {
        tracing::warn!(
            suppressed,
            "{what}: {details} ({suppressed} more like it not logged)"
        );
    } else {
        tracing::warn!("{what}: {details}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_keeps_characters_whole() {
        let text = "é".repeat(100); // 200 bytes
        let clipped = clip(&text).to_string();
        assert!(clipped.starts_with(&"é".repeat(64)), "{clipped}");
        assert!(clipped.ends_with("(200 bytes)"), "{clipped}");
    }
}

/// The examples of this module's items (private: rustdoc cannot run them).
#[cfg(test)]
mod doc_examples {
    #[test]
    fn clip_keeps_short_text_and_cuts_long_text() {
        use crate::log::clip;
        assert_eq!(clip("short").to_string(), "short");
        let long = "x".repeat(1000);
        assert_eq!(
            clip(&long).to_string(),
            format!("{}… (1000 bytes)", "x".repeat(128))
        );
    }
}

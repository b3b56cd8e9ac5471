//! Object keys: the S3-style naming rules every key must pass.
//!
//! A key is UTF-8, 1..=1024 bytes, `/`-separated, with no NUL or control
//! characters, no `.`/`..` segments, no leading `/`, and not under the
//! reserved `.ferry/` prefix. Every rejection names the rule it broke so a
//! person can fix the key without reading the source.

use std::fmt;

/// The longest key, in bytes of UTF-8 (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// The prefix ferry keeps for its own namespace, locally and on remotes.
pub const RESERVED_PREFIX: &str = ".ferry/";

/// The rule a rejected key broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// The key is the empty string.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The key is not valid UTF-8 (only possible for keys given as bytes).
    NotUtf8,
    /// The key holds NUL or another control character.
    ControlCharacter {
        /// The offending character.
        ch: char,
        /// Its byte offset in the key.
        offset: usize,
    },
    /// A `/`-separated segment is `.` or `..`.
    DotSegment {
        /// The offending segment (`.` or `..`).
        segment: String,
    },
    /// The key starts with `/`.
    LeadingSlash,
    /// The key lies under the reserved `.ferry/` prefix.
    Reserved,
}

impl fmt::Display for KeyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRule::Empty => write!(f, "a key must be 1 to {MAX_KEY_LEN} bytes long, and this one is empty"),
            KeyRule::TooLong { len } => write!(
                f,
                "a key must be at most {MAX_KEY_LEN} bytes of UTF-8, and this one is {len} bytes"
            ),
            KeyRule::NotUtf8 => write!(f, "a key must be valid UTF-8"),
            KeyRule::ControlCharacter { ch, offset } => write!(
                f,
                "a key may not contain NUL or control characters (found U+{:04X} at byte {offset})",
                u32::from(*ch)
            ),
            KeyRule::DotSegment { segment } => write!(
                f,
                "a key may not contain a `{segment}` segment (`.` and `..` are not allowed between slashes)"
            ),
            KeyRule::LeadingSlash => write!(f, "a key may not start with `/`"),
            KeyRule::Reserved => {
                write!(f, "the prefix `{RESERVED_PREFIX}` is reserved for ferry's own use")
            }
        }
    }
}

/// A key that failed validation, with the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key {}: {rule}", shown(key))]
pub struct KeyError {
    /// The rejected key (lossy if it was not UTF-8).
    pub key: String,
    /// The rule it broke.
    pub rule: KeyRule,
}

/// Quotes a key for an error message, shortening very long ones.
fn shown(key: &str) -> String {
    const SHOWN: usize = 80;
    if key.len() <= SHOWN {
        format!("{key:?}")
    } else {
        let mut end = SHOWN;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}…", &key[..end])
    }
}

/// Checks `key` against every key rule, returning the first one it breaks.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    let fail = |rule| {
        Err(KeyError {
            key: key.to_owned(),
            rule,
        })
    };
    if key.is_empty() {
        return fail(KeyRule::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return fail(KeyRule::TooLong { len: key.len() });
    }
    if let Some((offset, ch)) = key.char_indices().find(|(_, c)| c.is_control()) {
        return fail(KeyRule::ControlCharacter { ch, offset });
    }
    if key.starts_with('/') {
        return fail(KeyRule::LeadingSlash);
    }
    if let Some(segment) = key.split('/').find(|s| *s == "." || *s == "..") {
        return fail(KeyRule::DotSegment {
            segment: segment.to_owned(),
        });
    }
    if key.starts_with(RESERVED_PREFIX) {
        return fail(KeyRule::Reserved);
    }
    Ok(())
}

/// Validates a key given as raw bytes (from a command line or a remote listing).
pub fn validate_key_bytes(key: &[u8]) -> Result<&str, KeyError> {
    match std::str::from_utf8(key) {
        Ok(s) => validate_key(s).map(|()| s),
        Err(_) => Err(KeyError {
            key: String::from_utf8_lossy(key).into_owned(),
            rule: KeyRule::NotUtf8,
        }),
    }
}

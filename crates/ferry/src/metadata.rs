//! User metadata and content types: validation and defaults.
//!
//! User metadata follows S3's rules so that it can travel as the store's own
//! headers later: names are ASCII header tokens (stored lowercase, as S3
//! does), values hold no control characters, and names plus values total at
//! most 1,792 bytes (2 KiB less room for ferry's own entries), and no
//! name starts with `ferry-`.

use std::collections::BTreeMap;

/// User metadata: lowercase ASCII names to string values, in name order.
pub type Metadata = BTreeMap<String, String>;

/// What user metadata may total (names plus values, bytes): S3's 2 KiB
/// ([`STORE_METADATA_BYTES`]) less the room ferry's own entries need on
/// the store (`ferry-hash`, `ferry-mtime`, `ferry-device`, `ferry-base`:
/// about 190 bytes), so a user at the limit is never refused by a strict
/// store at push time.
pub const MAX_METADATA_BYTES: usize = STORE_METADATA_BYTES - 256;

/// S3's limit on the total size of an object's user metadata.
pub const STORE_METADATA_BYTES: usize = 2048;

/// Metadata names starting with this are ferry's own (`ferry-hash`, ...).
pub const RESERVED_METADATA_PREFIX: &str = "ferry-";

/// The content type used when none is given and the extension says nothing.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why a metadata entry or content type was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A metadata name is empty.
    #[error("invalid metadata: a name may not be empty")]
    EmptyName,
    /// A metadata name has a character outside ASCII letters, digits, `-`, `_` and `.`.
    #[error(
        "invalid metadata name {name:?}: names may use only ASCII letters, digits, `-`, `_` and `.`"
    )]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// Two names are equal ignoring case.
    #[error("invalid metadata: the name {name:?} appears twice (names ignore case)")]
    DuplicateName {
        /// The repeated name, lowercased.
        name: String,
    },
    /// A metadata value holds a control character.
    #[error("invalid metadata value for {name:?}: values may not contain control characters")]
    BadValue {
        /// The name whose value was rejected.
        name: String,
    },
    /// The metadata is larger than S3 allows.
    #[error(
        "metadata too large: names and values total {size} bytes, the limit is {MAX_METADATA_BYTES}"
    )]
    TooLarge {
        /// Total bytes of names and values.
        size: usize,
    },
    /// The name is one of ferry's own (`ferry-*`): it would never reach
    /// another device as the user's.
    #[error("invalid metadata name {name:?}: names starting with `ferry-` are reserved for ferry's own entries")]
    Reserved {
        /// The rejected name.
        name: String,
    },
    /// The content type is empty or holds control characters.
    #[error(
        "invalid content type {value:?}: it must be non-empty printable text like `text/plain`"
    )]
    BadContentType {
        /// The rejected content type.
        value: String,
    },
}

/// Validates user metadata and returns it with names lowercased.
pub fn normalize_metadata(metadata: &Metadata) -> Result<Metadata, MetadataError> {
    let mut out = Metadata::new();
    let mut size = 0;
    for (name, value) in metadata {
        if name.is_empty() {
            return Err(MetadataError::EmptyName);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(MetadataError::BadName { name: name.clone() });
        }
        if value.chars().any(char::is_control) {
            return Err(MetadataError::BadValue { name: name.clone() });
        }
        let lower = name.to_ascii_lowercase();
        if lower.starts_with(RESERVED_METADATA_PREFIX) {
            return Err(MetadataError::Reserved { name: name.clone() });
        }
        size += lower.len() + value.len();
        if out.insert(lower.clone(), value.clone()).is_some() {
            return Err(MetadataError::DuplicateName { name: lower });
        }
    }
    if size > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge { size });
    }
    Ok(out)
}

/// Validates a given content type, or guesses one from the key's extension.
pub fn content_type_for(key: &str, given: Option<&str>) -> Result<String, MetadataError> {
    match given {
        Some(value) => {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                Err(MetadataError::BadContentType {
                    value: value.to_owned(),
                })
            } else {
                Ok(value.to_owned())
            }
        }
        None => {
            let name = key.rsplit('/').next().unwrap_or(key);
            Ok(mime_guess::from_path(name)
                .first_raw()
                .unwrap_or(DEFAULT_CONTENT_TYPE)
                .to_owned())
        }
    }
}

/// A metadata value as a header-based store (S3, Azure, a URL signer)
/// must receive it to give it back exactly: values an HTTP header cannot
/// carry as they are (any character outside visible ASCII and space, a
/// space or tab at either end, which header parsing trims) and values that
/// already look encoded (`=?...?=`) go as one RFC 2047 encoded word,
/// `=?UTF-8?B?<base64>?=` (how S3 itself returns non-ASCII values); others
/// go unchanged. [`from_header_value`] is its inverse.
pub fn to_header_value(value: &str) -> std::borrow::Cow<'_, str> {
    use base64::Engine;
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with([' ', '\t'])
        && !value.ends_with([' ', '\t'])
        && !(value.starts_with("=?") && value.ends_with("?="));
    if plain {
        std::borrow::Cow::Borrowed(value)
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        std::borrow::Cow::Owned(format!("=?UTF-8?B?{b64}?="))
    }
}

/// A metadata value as a header-based store gave it back: one RFC 2047
/// encoded word in UTF-8 (`B` or `Q` encoding) is decoded; anything else
/// (including a word that does not decode) is kept as it is.
pub fn from_header_value(value: &str) -> String {
    decode_encoded_word(value).unwrap_or_else(|| value.to_owned())
}

fn decode_encoded_word(value: &str) -> Option<String> {
    use base64::Engine;
    let inner = value.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let charset = parts.next()?;
    let encoding = parts.next()?;
    let text = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => {
            let mut out = Vec::with_capacity(text.len());
            let mut rest = text.as_bytes();
            while let Some((&b, tail)) = rest.split_first() {
                match b {
                    b'_' => out.push(b' '),
                    b'=' => {
                        let hex = tail.get(..2)?;
                        let s = std::str::from_utf8(hex).ok()?;
                        out.push(u8::from_str_radix(s, 16).ok()?);
                        rest = &tail[2..];
                        continue;
                    }
                    other => out.push(other),
                }
                rest = tail;
            }
            out
        }
        _ => return None,
    };
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod header_value_tests {
    use super::{from_header_value, to_header_value};

    /// Issue 24, 7.5: every value survives a header-based store exactly.
    #[test]
    fn values_round_trip_through_headers() {
        for v in [
            "plain",
            "  two  spaces ",
            " lead",
            "trail\t",
            "ÏnÏcÖdÉ",
            "日本語",
            "=?UTF-8?B?aGk=?=",
            "=?not encoded",
            "",
            "a=?b?=c",
        ] {
            let sent = to_header_value(v);
            assert!(
                sent.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{v:?} -> {sent:?}"
            );
            assert_eq!(sent.trim(), sent, "{v:?} -> {sent:?}");
            assert_eq!(from_header_value(&sent), v, "{v:?} -> {sent:?}");
        }
        assert_eq!(to_header_value("plain"), "plain");
        assert_eq!(
            from_header_value("=?utf-8?Q?caf=C3=A9_au_lait?="),
            "café au lait"
        );
        assert_eq!(
            from_header_value("=?ISO-8859-1?Q?x?="),
            "=?ISO-8859-1?Q?x?="
        );
    }
}

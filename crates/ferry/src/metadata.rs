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

/// The metadata entry that carries, for a header-based store, the values
/// its headers cannot give back exactly: base64 of a JSON object, name to
/// value (see [`to_headers`]).
pub const EXACT_VALUES: &str = "ferry-exact";

/// Metadata as a header-based store (S3 and what speaks it, a URL signer)
/// must receive it to give every value back exactly:
/// - a value outside printable ASCII goes as RFC 2047 encoded words
///   (`=?UTF-8?B?...?=`), the form S3 itself answers with (S3 and s3s
///   decode such words when they store a value, moto keeps them);
/// - a value a server would not give back as sent (a space at either end,
///   which HTTP trims, or one that reads as encoded words, which the
///   server would decode) goes trimmed in its own header, for other tools,
///   and exactly in the entry `ferry-exact`.
///
/// [`from_headers`] is its inverse.
pub fn to_headers(all: &Metadata) -> Metadata {
    use base64::Engine;
    let mut out = Metadata::new();
    let mut exact = Metadata::new();
    for (name, value) in all {
        let trimmed = value.trim_matches([' ', '\t']);
        if trimmed.len() != value.len() || decode_encoded_words(value).is_some() {
            exact.insert(name.clone(), value.clone());
        }
        out.insert(name.clone(), encode_words(trimmed));
    }
    if !exact.is_empty() {
        // A map of strings always serializes.
        let json = serde_json::to_vec(&exact).unwrap_or_default();
        out.insert(
            EXACT_VALUES.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(json),
        );
    }
    out
}

/// Metadata as a header-based store gave it back (see [`to_headers`]):
/// encoded words decoded, the exact values put back.
pub fn from_headers(all: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    use base64::Engine;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut exact = Metadata::new();
    for (name, value) in all {
        if name.eq_ignore_ascii_case(EXACT_VALUES) {
            if let Some(map) = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|json| serde_json::from_slice::<Metadata>(&json).ok())
            {
                exact = map;
            }
            continue;
        }
        let decoded = decode_encoded_words(&value).unwrap_or(value);
        out.push((name, decoded));
    }
    for (name, value) in &mut out {
        if let Some(v) = exact.get(&name.to_ascii_lowercase()) {
            value.clone_from(v);
        }
    }
    out
}

/// `value` as one RFC 2047 encoded word when it holds anything outside
/// printable ASCII, else as it is.
fn encode_words(value: &str) -> String {
    use base64::Engine;
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        value.to_owned()
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value.as_bytes());
        format!("=?UTF-8?B?{b64}?=")
    }
}

/// Decodes a value made only of RFC 2047 encoded words in UTF-8 (B or Q
/// encoding), separated by spaces (a long value is split so by S3 and
/// s3s); `None` for anything else.
fn decode_encoded_words(value: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut any = false;
    for word in value.split([' ', '\t']).filter(|w| !w.is_empty()) {
        bytes.extend(decode_encoded_word(word)?);
        any = true;
    }
    if !any {
        return None;
    }
    String::from_utf8(bytes).ok()
}

fn decode_encoded_word(value: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let inner = value.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut parts = inner.splitn(3, '?');
    let charset = parts.next()?;
    let encoding = parts.next()?;
    let text = parts.next()?;
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD.decode(text).ok(),
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
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod header_tests {
    use super::{from_headers, to_headers, Metadata};

    /// Issue 24, 7.5: every value survives a header-based store exactly,
    /// whether the store keeps encoded words (moto) or decodes them and
    /// trims what it answers (S3, s3s).
    #[test]
    fn values_round_trip_through_headers() {
        let values = [
            ("plain", "plain"),
            ("sp", "  two  spaces "),
            ("lead", " lead"),
            ("uni", "ÏnÏcÖdÉ"),
            ("cjk", "日本語"),
            (
                "long",
                "é long value with accents, well over forty-five bytes: ééééééééé",
            ),
            ("enc", "=?UTF-8?B?aGk=?="),
            ("half", "=?not encoded"),
            ("empty", ""),
        ];
        let all: Metadata = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let sent = to_headers(&all);
        for v in sent.values() {
            assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v:?}");
            assert_eq!(v.trim(), v, "{v:?}");
        }
        assert_eq!(sent["plain"], "plain");
        // A store that keeps what it is sent.
        let kept: Metadata = from_headers(sent.clone()).into_iter().collect();
        assert_eq!(kept, all);
        // A store that decodes encoded words and answers ASCII as it is
        // (trimmed by the client), non-ASCII as encoded words again.
        let decoding: Vec<(String, String)> = sent
            .iter()
            .map(|(k, v)| {
                let plain = super::decode_encoded_words(v).unwrap_or_else(|| v.clone());
                (k.clone(), super::encode_words(plain.trim()))
            })
            .collect();
        let got: Metadata = from_headers(decoding).into_iter().collect();
        assert_eq!(got, all);
        assert_eq!(
            super::decode_encoded_words("=?utf-8?Q?caf=C3=A9_au_lait?=").as_deref(),
            Some("café au lait")
        );
        assert_eq!(super::decode_encoded_words("=?ISO-8859-1?Q?x?="), None);
    }
}

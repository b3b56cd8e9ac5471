//! The change journal on the remote (format v1, `docs/design.md` §6.1):
//! what ferry writers changed, so an idle replica learns "nothing changed"
//! from one LIST at any bucket size.
//!
//! Records live at `.ferry/journal/r/<seq>` (20 decimal digits), each
//! written with `If-None-Match: *`, so two writers never take the same
//! sequence number. A record names the keys one run changed (key, op,
//! remote etag, content hash) and its writer. Encrypted buckets seal the
//! record (the keys are names) bound to its sequence number, so a sealed
//! record cannot be moved to another slot; every reader checks that a
//! record's `seq` is its name's and that a record past the first links to
//! the one before it (`prev`). Writers compact: past [`RETAIN`] records
//! they delete the oldest, and a reader whose position fell behind what is
//! kept (or whose records vanished) does a full reconcile instead.
//!
//! This module is pure: names, encoding, and what a listing of record
//! names means for a reader. The executor (`sync`) does the requests.

use crate::crypto::keyring::Keyring;

/// Where the records are (under the remote prefix).
pub const RECORDS: &str = ".ferry/journal/r/";

/// Format version written in every record.
pub const FORMAT: u32 = 1;

/// Records kept by default (`SyncConfig::journal_retain`); a writer that
/// sees more than twice as many deletes the oldest down to this many.
pub const RETAIN: u64 = 256;

/// Most entries in one record (a run that changed more writes several).
pub const MAX_ENTRIES: usize = 1000;

/// The sealing context of an encrypted bucket's records: this, then the
/// record's sequence number (u64 BE).
const CONTEXT: &[u8] = b"ferry journal v2\0";
/// The constant context records were sealed under before the sequence
/// number was bound (still read: the `seq` inside them is checked against
/// their name all the same).
const CONTEXT_V1: &[u8] = b"ferry journal v1\0";

/// The sealing context of record `seq`.
fn context(seq: u64) -> Vec<u8> {
    let mut c = CONTEXT.to_vec();
    c.extend_from_slice(&seq.to_be_bytes());
    c
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// A version was written.
    Put,
    /// The object was deleted.
    Delete,
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// The ferry key.
    pub key: String,
    /// Put or delete.
    pub op: Op,
    /// The remote version written (puts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its content hash, hex (puts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// [`FORMAT`].
    pub v: u32,
    /// Its sequence number (also its name).
    pub seq: u64,
    /// The writing device.
    pub device: String,
    /// When it was written, ms since the Unix epoch (the writer's clock).
    pub time_ms: i64,
    /// What changed.
    pub entries: Vec<Entry>,
    /// The digest ([`digest`], hex) of the record before it, as its writer
    /// read it: the records form a chain, so a replica notices a journal
    /// rewritten below what it has read (absent in records written before
    /// the chain, and in the first record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

/// A record's digest: BLAKE3 of its bytes as stored (sealed, in an
/// encrypted bucket).
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The object name of record `seq`.
pub fn record_name(seq: u64) -> String {
    format!("{RECORDS}{seq:020}")
}

/// The sequence number a listed name holds, if it is a record's.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(RECORDS)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The bytes of a record: JSON, sealed in an encrypted bucket bound to
/// its sequence number.
pub fn encode(record: &Record, keys: Option<&Keyring>) -> Result<Vec<u8>, String> {
    let json = zeroize::Zeroizing::new(serde_json::to_vec(record).map_err(|e| e.to_string())?);
    match keys {
        Some(k) => k
            .seal_record(&context(record.seq), &json)
            .map_err(|e| e.to_string()),
        None => Ok(json.to_vec()),
    }
}

/// Reads the bytes of record `seq` (the number its name holds). Refused: a
/// sealed record that does not open as record `seq`, a record whose own
/// `seq` is another (moved from another slot), and a record past the first
/// without the link to the one before it.
pub fn decode(bytes: &[u8], keys: Option<&Keyring>, seq: u64) -> Result<Record, String> {
    let json = match keys {
        Some(k) => k
            .open_record(&context(seq), bytes)
            .or_else(|_| k.open_record(CONTEXT_V1, bytes))
            .map_err(|e| {
                format!("the journal record does not open under this bucket's key as record {seq} ({e})")
            })?,
        None => zeroize::Zeroizing::new(bytes.to_vec()),
    };
    let record: Record =
        serde_json::from_slice(&json).map_err(|e| format!("malformed journal record: {e}"))?;
    if record.v != FORMAT {
        return Err(format!("unsupported journal format {}", record.v));
    }
    if record.seq != seq {
        return Err(format!(
            "the record stored as number {seq} says it is number {} (moved from another slot)",
            record.seq
        ));
    }
    if seq > 1 && record.prev.is_none() {
        return Err(format!(
            "record {seq} does not name the record before it (every record past the first must)"
        ));
    }
    Ok(record)
}

/// What the listed record numbers mean for a reader that has read up to
/// `pos` (`None`: it never read the journal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// Nothing new.
    Nothing,
    /// These records are new, in order.
    Read(Vec<u64>),
    /// The history the reader needs is gone (compacted, or the remote's
    /// journal was replaced): only a full reconcile can tell what changed.
    Gap,
}

/// Compares a reader's position with the records listed (any order).
pub fn tail(pos: Option<u64>, listed: &[u64]) -> Tail {
    let Some(pos) = pos else {
        return Tail::Gap;
    };
    let mut seqs: Vec<u64> = listed.to_vec();
    seqs.sort_unstable();
    seqs.dedup();
    let newest = seqs.last().copied();
    if pos > 0 && newest.is_none_or(|n| n < pos) {
        // Records we read are gone and nothing replaced them.
        return Tail::Gap;
    }
    let newer: Vec<u64> = seqs.into_iter().filter(|s| *s > pos).collect();
    match newer.first() {
        None => Tail::Nothing,
        Some(first) if *first > pos + 1 => Tail::Gap,
        Some(_) => Tail::Read(newer),
    }
}

/// The records a writer that just wrote `newest` deletes: the oldest ones
/// when more than `2 * retain` are kept, down to `retain`.
pub fn to_compact(listed: &[u64], newest: u64, retain: u64) -> Vec<u64> {
    let retain = retain.max(1);
    let keep_from = newest.saturating_sub(retain - 1);
    let old: Vec<u64> = listed.iter().copied().filter(|s| *s < keep_from).collect();
    if (listed.len() as u64) > 2 * retain {
        old
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&record_name(42)), Some(42));
        assert_eq!(parse_name(".ferry/journal/r/42"), None);
        assert_eq!(parse_name("r/00000000000000000042"), None);
    }

    #[test]
    fn tails() {
        assert_eq!(tail(None, &[1, 2]), Tail::Gap);
        assert_eq!(tail(Some(0), &[]), Tail::Nothing);
        assert_eq!(tail(Some(0), &[1, 2]), Tail::Read(vec![1, 2]));
        assert_eq!(tail(Some(2), &[2, 1]), Tail::Nothing);
        assert_eq!(tail(Some(2), &[1, 2, 3]), Tail::Read(vec![3]));
        assert_eq!(tail(Some(2), &[5, 6]), Tail::Gap);
        assert_eq!(tail(Some(5), &[]), Tail::Gap);
        assert_eq!(tail(Some(9), &[1, 2]), Tail::Gap);
    }

    fn record(seq: u64, prev: Option<&str>) -> Record {
        Record {
            v: FORMAT,
            seq,
            device: "d".into(),
            time_ms: 0,
            entries: vec![],
            prev: prev.map(str::to_owned),
        }
    }

    /// A record is read only in its own slot: sealed bound to its number
    /// (and sealed before that, by the `seq` inside), plaintext by the
    /// `seq` inside; and past the first it must link to the one before.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn records_open_only_in_their_own_slot_and_link_past_the_first() {
        use crate::crypto::keys::Key;
        use crate::crypto::names::NameFormat;
        let keys = Keyring::new(&Key([5; 32]), NameFormat::V2);
        for k in [Some(&keys), None] {
            let first = encode(&record(1, None), k).unwrap();
            assert_eq!(decode(&first, k, 1).unwrap(), record(1, None));
            let err = decode(&first, k, 3).unwrap_err();
            assert!(err.contains("3"), "{err}");
            let third = encode(&record(3, Some("ab")), k).unwrap();
            assert!(decode(&third, k, 3).is_ok());
            assert!(decode(&third, k, 4).is_err());
            let unlinked = encode(&record(3, None), k).unwrap();
            let err = decode(&unlinked, k, 3).unwrap_err();
            assert!(err.contains("does not name the record before it"), "{err}");
        }
        // Sealed under the old constant context: read in its slot only.
        let json = serde_json::to_vec(&record(2, Some("ab"))).unwrap();
        let old = keys.seal_record(CONTEXT_V1, &json).unwrap();
        assert!(decode(&old, Some(&keys), 2).is_ok());
        let err = decode(&old, Some(&keys), 5).unwrap_err();
        assert!(err.contains("says it is number 2"), "{err}");
    }

    #[test]
    fn compaction_keeps_retain() {
        let listed: Vec<u64> = (1..=2 * RETAIN + 1).collect();
        let newest = 2 * RETAIN + 1;
        let gone = to_compact(&listed, newest, RETAIN);
        assert_eq!(gone.len() as u64, RETAIN + 1);
        assert!(to_compact(&listed[..10], 10, RETAIN).is_empty());
    }
}

//! The change journal on the remote (format v2, `docs/design.md` §6.1):
//! what ferry writers changed, so an idle replica learns "nothing changed"
//! from one LIST at any bucket size.
//!
//! Each device appends to its own stream: records live at
//! `.ferry/journal/d/<device>/<seq>` (20 decimal digits), numbered from 1
//! by their writer alone. No counter is shared between devices, so no
//! record can be lost to two writers taking one number, even on a store
//! that ignores conditional writes (v1's single stream lost records
//! there). A record names the keys one run changed (key, op, remote etag,
//! content hash), its writer and its number, and the digest of the
//! writer's record before it (a chain per stream). Encrypted buckets seal
//! the record with its name as associated data (a record cannot be moved
//! to another slot or stream). Writers compact their own stream: past
//! [`RETAIN`] records they delete the oldest, and a reader whose position
//! in a stream fell behind what is kept (or whose records vanished) does
//! a full reconcile instead. v1 records (`.ferry/journal/r/`) are ignored.
//!
//! This module is pure: names, encoding, and what a listing of record
//! names means for a reader. The executor (`sync`) does the requests.

use crate::crypto::keyring::Keyring;

/// Where the journal is (under the remote prefix): both layouts.
pub const JOURNAL: &str = ".ferry/journal/";

/// Where the devices' streams are (under the remote prefix).
pub const STREAMS: &str = ".ferry/journal/d/";

/// Format version written in every record.
pub const FORMAT: u32 = 2;

/// Records kept by default (`SyncConfig::journal_retain`); a writer that
/// sees more than twice as many deletes the oldest down to this many.
pub const RETAIN: u64 = 256;

/// Most entries in one record (a run that changed more writes several).
pub const MAX_ENTRIES: usize = 1000;

/// The sealing context of an encrypted bucket's records (the record's
/// name follows it).
const CONTEXT: &[u8] = b"ferry journal v2\0";

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
    /// The remote version written (puts), or the version deleted (deletes:
    /// the version the deleter agreed on, so a replica whose newer version
    /// a delete removed unseen, on a store that ignores conditions, can
    /// tell; none in deletes of format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its content hash, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Puts: the version the writer replaced (the `ferry-base` of the first
    /// of its writes this entry covers), so a replica whose own push was
    /// overwritten on a store that ignores conditions tells whether the
    /// writer saw it. None in deletes and in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Deletes in encrypted buckets: the deleter's version stamp floor for
    /// the key (past the stamp of every version it saw), so a device that
    /// creates the key again seals a larger stamp than the deleted version
    /// carried, whatever its clock says. None in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<u64>,
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

/// The object name of record `seq` of `device`'s stream.
pub fn record_name(device: &str, seq: u64) -> String {
    format!("{STREAMS}{device}/{seq:020}")
}

/// True for a device id as streams are named (1–64 lowercase letters,
/// digits or `-`: nothing that could be a path).
fn valid_device(device: &str) -> bool {
    !device.is_empty()
        && device.len() <= 64
        && device
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The device and sequence number a listed name holds, if it is a record's.
pub fn parse_name(name: &str) -> Option<(String, u64)> {
    let rest = name.strip_prefix(STREAMS)?;
    let (device, digits) = rest.split_once('/')?;
    (valid_device(device) && digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok().map(|seq| (device.to_owned(), seq)))
        .flatten()
}

fn context(device: &str, seq: u64) -> Vec<u8> {
    let mut c = CONTEXT.to_vec();
    c.extend_from_slice(record_name(device, seq).as_bytes());
    c
}

/// The bytes of a record: JSON, sealed in an encrypted bucket (bound to
/// its name: its device and number).
pub fn encode(record: &Record, keys: Option<&Keyring>) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    match keys {
        Some(k) => k
            .seal_record(&context(&record.device, record.seq), &json)
            .map_err(|e| e.to_string()),
        None => Ok(json),
    }
}

/// Reads the bytes of record `seq` of `device`'s stream. A record that
/// names another slot (moved or replayed there) is refused, and so is a
/// record past the first without the digest of the one before it.
pub fn decode(
    bytes: &[u8],
    keys: Option<&Keyring>,
    device: &str,
    seq: u64,
) -> Result<Record, String> {
    let json = match keys {
        Some(k) => k
            .open_record(&context(device, seq), bytes)
            .map_err(|e| format!("the journal record does not open under this bucket's key ({e})"))?
            .to_vec(),
        None => bytes.to_vec(),
    };
    let record: Record =
        serde_json::from_slice(&json).map_err(|e| format!("malformed journal record: {e}"))?;
    if record.v != FORMAT {
        return Err(format!("unsupported journal format {}", record.v));
    }
    if record.seq != seq || record.device != device {
        return Err(format!(
            "the record names slot {}/{} but is stored at {device}/{seq}",
            record.device, record.seq
        ));
    }
    if seq > 1 && record.prev.is_none() {
        return Err("the record does not name the record before it".into());
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
        assert_eq!(
            parse_name(&record_name("ab12", 42)),
            Some(("ab12".to_owned(), 42))
        );
        assert_eq!(parse_name(".ferry/journal/d/ab12/42"), None);
        assert_eq!(parse_name(".ferry/journal/r/00000000000000000042"), None);
        assert_eq!(parse_name(".ferry/journal/d/../00000000000000000042"), None);
        assert_eq!(
            parse_name(".ferry/journal/d/a/b/00000000000000000042"),
            None
        );
    }

    #[test]
    fn a_record_is_bound_to_its_slot() {
        let record = Record {
            v: FORMAT,
            seq: 2,
            device: "ab".into(),
            time_ms: 0,
            entries: vec![],
            prev: Some("00".into()),
        };
        let bytes = encode(&record, None).unwrap_or_default();
        assert_eq!(decode(&bytes, None, "ab", 2), Ok(record.clone()));
        assert!(decode(&bytes, None, "ab", 3).is_err());
        assert!(decode(&bytes, None, "cd", 2).is_err());
        let unchained = Record {
            prev: None,
            ..record
        };
        let bytes = encode(&unchained, None).unwrap_or_default();
        assert!(decode(&bytes, None, "ab", 2).is_err());
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

    #[test]
    fn compaction_keeps_retain() {
        let listed: Vec<u64> = (1..=2 * RETAIN + 1).collect();
        let newest = 2 * RETAIN + 1;
        let gone = to_compact(&listed, newest, RETAIN);
        assert_eq!(gone.len() as u64, RETAIN + 1);
        assert!(to_compact(&listed[..10], 10, RETAIN).is_empty());
    }
}

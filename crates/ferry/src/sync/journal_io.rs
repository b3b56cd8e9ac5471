//! The change journal on the remote: this replica's position in it, reading
//! records and appending them (the format is in `journal`).

use std::collections::BTreeMap;

use crate::bucket::Bucket;
use crate::crypto::keyring::Keyring;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::metadata::Metadata;
use crate::remote::{
    Precondition, PutRequest, RemoteBody, RemoteError, RemoteErrorKind, SharedRemote,
};
use crate::store::record::SyncRecord;
use crate::sync::journal;

use super::{JournalState, SyncOptions, SyncReport};

impl Bucket {
    /// Pushes local changes and pulls remote ones.
    pub async fn sync(&self, opts: SyncOptions) -> Result<SyncReport> {
        self.sync_with_progress(opts, None).await
    }

    /// Where this replica is in `endpoint`'s journal (a state of an older
    /// format: nowhere).
    pub(super) fn journal_state(&self, endpoint: &str) -> Result<JournalState> {
        let all: BTreeMap<String, JournalState> = self.setting_json("journal")?.unwrap_or_default();
        Ok(match all.get(endpoint) {
            Some(s) if s.v == journal::FORMAT => s.clone(),
            Some(s) => JournalState {
                last_full_ms: s.last_full_ms,
                ..JournalState::default()
            },
            None => JournalState::default(),
        })
    }

    pub(super) async fn set_journal_state(
        &self,
        endpoint: &str,
        state: JournalState,
    ) -> Result<()> {
        let mut all: BTreeMap<String, JournalState> =
            self.setting_json("journal")?.unwrap_or_default();
        if all.get(endpoint) == Some(&state) {
            return Ok(());
        }
        all.insert(endpoint.to_owned(), state);
        self.set_setting_json("journal", &all).await
    }

    /// The sequence numbers in every device's stream (one LIST, paged),
    /// each stream's in order.
    pub(super) async fn list_streams(
        &self,
        raw: &SharedRemote,
    ) -> Result<BTreeMap<String, Vec<u64>>> {
        self.list_streams_under(raw, journal::STREAMS).await
    }

    /// The sequence numbers of this device's own stream.
    async fn list_own_stream(&self, raw: &SharedRemote) -> Result<Vec<u64>> {
        let prefix = format!("{}{}/", journal::STREAMS, self.device_id());
        Ok(self
            .list_streams_under(raw, &prefix)
            .await?
            .remove(self.device_id())
            .unwrap_or_default())
    }

    async fn list_streams_under(
        &self,
        raw: &SharedRemote,
        prefix: &str,
    ) -> Result<BTreeMap<String, Vec<u64>>> {
        let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for o in raw.list(prefix).await? {
            if let Some((device, seq)) = journal::parse_name(&o.key) {
                out.entry(device).or_default().push(seq);
            }
        }
        for seqs in out.values_mut() {
            seqs.sort_unstable();
            seqs.dedup();
        }
        Ok(out)
    }

    /// The digest of record `seq` as stored (`None`: there is none).
    pub(super) async fn record_digest(
        &self,
        raw: &SharedRemote,
        device: &str,
        seq: u64,
    ) -> Result<Option<[u8; 32]>> {
        match self.read_record_bytes(raw, device, seq).await {
            Ok(bytes) => Ok(Some(journal::digest(&bytes))),
            Err(Error::Remote(e)) if e.kind == RemoteErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn read_record_bytes(
        &self,
        raw: &SharedRemote,
        device: &str,
        seq: u64,
    ) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let name = journal::record_name(device, seq);
        let (_, reader) = raw.get(&name).await?;
        let mut bytes = Vec::new();
        reader
            .take(64 << 20)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| {
                Error::Remote(RemoteError::new(
                    RemoteErrorKind::Retryable,
                    raw.endpoint(),
                    format!("reading {name}: {e}"),
                ))
            })?;
        Ok(bytes)
    }

    /// Reads one journal record, with its digest.
    pub(super) async fn read_record(
        &self,
        raw: &SharedRemote,
        device: &str,
        seq: u64,
        keys: Option<&Keyring>,
    ) -> Result<(journal::Record, [u8; 32])> {
        let name = journal::record_name(device, seq);
        let bytes = self.read_record_bytes(raw, device, seq).await?;
        let record = journal::decode(&bytes, keys, device, seq).map_err(|e| {
            Error::Remote(RemoteError::new(
                RemoteErrorKind::Integrity,
                raw.endpoint(),
                format!("{name}: {e}"),
            ))
        })?;
        Ok((record, journal::digest(&bytes)))
    }

    /// Appends what this replica wrote to the remote and has not journaled
    /// yet (`journal_pending`, filled in the same transactions that record
    /// the writes) to this device's own stream, after `own` (the last
    /// record it knows it wrote), each with `If-None-Match: *` (a number
    /// taken meanwhile, by a copy of this bucket, is skipped). Compacts the
    /// stream when it grew past twice `retain` records. Returns the last
    /// sequence number written and its digest.
    pub(super) async fn append_journal(
        &self,
        raw: &SharedRemote,
        keys: Option<&Keyring>,
        own: super::StreamPos,
        retain: u64,
    ) -> Result<Option<(u64, [u8; 32])>> {
        // Read a record's worth of entries at a time, in key order.
        let page = |after: &str| -> Result<Vec<journal::Entry>> {
            self.with_reader(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT p.key, p.op, p.etag, p.hash, p.base, nullif(coalesce(p.stamp, s.stamp), 0) \
                     FROM journal_pending p LEFT JOIN stamps s ON s.key = p.key \
                     WHERE p.key > ?1 ORDER BY p.key LIMIT ?2",
                )?;
                let rows =
                    stmt.query_map(rusqlite::params![after, journal::MAX_ENTRIES as i64], |r| {
                        Ok(journal::Entry {
                            key: r.get(0)?,
                            op: if r.get::<_, String>(1)? == "delete" {
                                journal::Op::Delete
                            } else {
                                journal::Op::Put
                            },
                            etag: r.get(2)?,
                            hash: r.get::<_, Option<Vec<u8>>>(3)?.map(hex::encode),
                            base: r.get(4)?,
                            stamp: r
                                .get::<_, Option<i64>>(5)?
                                .and_then(|s| u64::try_from(s).ok()),
                        })
                    })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        };
        if page("")?.is_empty() {
            return Ok(None);
        }
        // Numbers never go back: after the newest record of the stream as
        // it is now, and never below what this device wrote before.
        let listed = self.list_own_stream(raw).await?;
        let newest = listed.last().copied().unwrap_or(0).max(own.pos);
        let newest_digest = own.digest.filter(|_| newest == own.pos);
        let me = self.device_id().to_owned();
        let mut seq = newest + 1;
        let mut first = None;
        let mut after = String::new();
        // The chain: each record names the digest of the one before it.
        let mut prev: Option<Option<[u8; 32]>> = newest_digest.map(Some);
        let mut last_digest = [0u8; 32];
        loop {
            let chunk = page(&after)?;
            let Some(last_key) = chunk.last().map(|e| e.key.clone()) else {
                break;
            };
            if prev.is_none() {
                prev = Some(if seq > 1 {
                    self.record_digest(raw, &me, seq - 1).await?
                } else {
                    None
                });
            }
            let mut tries = 0;
            loop {
                let record = journal::Record {
                    v: journal::FORMAT,
                    seq,
                    device: self.device_id().to_owned(),
                    time_ms: self.now_ms(),
                    entries: chunk.clone(),
                    prev: prev.flatten().map(hex::encode),
                };
                let body = journal::encode(&record, keys).map_err(Error::IndexData)?;
                let written = journal::digest(&body);
                let req = PutRequest {
                    key: journal::record_name(&me, seq),
                    content_type: "application/json".into(),
                    metadata: Metadata::new(),
                    hash: ContentHash::of(&body),
                    size: body.len() as u64,
                    mtime_ms: record.time_ms,
                    device: String::new(),
                    base: String::new(),
                    sealed: true,
                    stamp: None,
                    progress: crate::remote::TransferProgress::none(),
                };
                match raw
                    .put(&req, RemoteBody::Bytes(body.into()), Precondition::IfAbsent)
                    .await
                {
                    Ok(_) => {
                        last_digest = written;
                        prev = Some(Some(written));
                        break;
                    }
                    Err(e) if e.kind == RemoteErrorKind::PreconditionFailed && tries < 10_000 => {
                        // Another writer took this number: the next one,
                        // chained to what it wrote.
                        tries += 1;
                        prev = Some(self.record_digest(raw, &me, seq).await?);
                        seq += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            first.get_or_insert(seq);
            let done: Vec<(String, Option<String>)> =
                chunk.into_iter().map(|e| (e.key, e.etag)).collect();
            self.record(SyncRecord::Journaled { entries: done }).await?;
            seq += 1;
            after = last_key;
        }
        if first.is_none() {
            return Ok(None);
        }
        let last = seq - 1;
        // Compaction: the oldest records of this stream go once there are
        // too many.
        let mut listed = listed;
        listed.extend(newest + 1..=last);
        for old in journal::to_compact(&listed, last, retain) {
            raw.delete(&journal::record_name(&me, old), Precondition::None)
                .await?;
        }
        Ok(Some((last, last_digest)))
    }
}

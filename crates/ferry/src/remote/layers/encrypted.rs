//! The encryption layer: what an encrypted bucket's remote sees.
//!
//! Wraps any [`Remote`] so that the store holds only ciphertext:
//! - names are encrypted segment by segment (AES-SIV, deterministic), so
//!   whole-segment prefixes still list;
//! - each object's body is an **envelope** followed by the sealed blob,
//!   sent exactly as the bucket stores it locally (no second encryption);
//! - the store's own headers carry nothing of ferry's (no hash, time,
//!   device, content type or user metadata).
//!
//! Envelope format v1 (see `docs/design.md`, "Encryption"):
//! ```text
//! "FRYE" | 1 | 0 0 0 | record length (u32 BE) | sealed record | sealed blob ("FRYB"...)
//! sealed record = sealed stream (metadata subkey, context "ferry envelope v1\0" ‖ key name)
//!                 of JSON {hash, size, content_type, metadata, mtime, blob}
//! ```
//! `blob` is the sealed blob's 16-byte nonce prefix, so a body swapped in
//! from another object or version fails at its header, before any
//! plaintext; `hash` (keyed) is checked again once the body is read.
//!
//! The remote also holds `.ferry/key.json`, the bucket's [`KeyFile`].

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::crypto::keyring::{KeyFile, Keyring};
use crate::crypto::stream::HEADER as BLOB_HEADER;
use crate::hash::ContentHash;
use crate::key::RESERVED_PREFIX;
use crate::metadata::Metadata;
use crate::remote::layer::Layer;
use crate::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject,
    RemoteReader, SharedRemote,
};

/// Where an encrypted remote keeps its key file.
pub const KEY_FILE: &str = ".ferry/key.json";
/// A plaintext bucket's record that it wrote this remote in the clear
/// (written when it first pushes): a second device joins such a remote
/// without an explicit `--plaintext`.
pub const PLAINTEXT_RECORD: &str = ".ferry/plaintext.json";
/// Listing entries whose names do not decrypt carry this prefix before the
/// raw name (no ferry key can start with NUL); the sync reports them.
pub const UNREADABLE_NAME: &str = "\0unreadable:";

const MAGIC: &[u8; 4] = b"FRYE";
const FIXED: usize = 12;
/// The largest sealed record accepted (user metadata is at most 2 KiB).
const MAX_RECORD: usize = 64 * 1024;
/// How much of an object `head` reads: enough for any envelope ferry writes.
const HEAD_READ: u64 = 8 * 1024;
const CONTEXT: &[u8] = b"ferry envelope v1\0";

/// The sealed description of an object, inside its envelope.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvelopeRecord {
    /// Keyed content hash (hex).
    pub hash: String,
    /// Plaintext size.
    pub size: u64,
    /// Content type.
    pub content_type: String,
    /// User metadata.
    pub metadata: Metadata,
    /// Modification time, ms since the Unix epoch.
    pub mtime: i64,
    /// The sealed blob's nonce prefix (hex).
    pub blob: String,
    /// The writing device (absent in envelopes written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The `ferry-base` of the version (see `remote::META_BASE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The version stamp: later versions of a key carry larger stamps
    /// (absent in envelopes written before it was added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stamp: Option<u64>,
}

fn context(key: &str) -> Vec<u8> {
    let mut c = CONTEXT.to_vec();
    c.extend_from_slice(key.as_bytes());
    c
}

fn integrity(endpoint: &str, key: &str, detail: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Integrity,
        endpoint,
        format!("object {key:?} failed its integrity check: {detail}"),
    )
}

/// Builds an envelope for `key` (format v1).
pub fn seal_envelope(
    keys: &Keyring,
    key: &str,
    record: &EnvelopeRecord,
) -> Result<Vec<u8>, crate::crypto::CryptoError> {
    let json = crate::crypto::keyring::sealed_json(record, "envelope")?;
    let sealed = keys.seal_record(&context(key), &json)?;
    let mut out = Vec::with_capacity(FIXED + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0, 0, 0]);
    out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The envelope's total length from its fixed part (at least 12 bytes).
fn envelope_len(fixed: &[u8]) -> Result<usize, String> {
    if fixed.len() < FIXED || &fixed[..4] != MAGIC {
        return Err("not an encrypted ferry object (bad magic)".into());
    }
    if fixed[4..8] != [1, 0, 0, 0] {
        return Err(format!("unsupported envelope version {}", fixed[4]));
    }
    let len = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
    if len > MAX_RECORD {
        return Err(format!("envelope record of {len} bytes is too large"));
    }
    Ok(FIXED + len)
}

/// Opens a whole envelope (its exact bytes) for `key`.
pub fn open_envelope(keys: &Keyring, key: &str, envelope: &[u8]) -> Result<EnvelopeRecord, String> {
    let total = envelope_len(envelope)?;
    if envelope.len() != total {
        return Err("the envelope is truncated".into());
    }
    let json = keys
        .open_record(&context(key), &envelope[FIXED..])
        .map_err(|e| format!("its envelope does not open under this name and key ({e})"))?;
    let record: EnvelopeRecord =
        serde_json::from_slice(&json).map_err(|e| format!("its envelope is malformed: {e}"))?;
    if record.hash.parse::<ContentHash>().is_err() || record.blob.len() != 32 {
        return Err("its envelope is malformed".into());
    }
    Ok(record)
}

/// A remote as an encrypted bucket sees it.
#[derive(Debug)]
pub struct Encrypted {
    inner: SharedRemote,
    keys: Arc<Keyring>,
}

impl Encrypted {
    /// Wraps `inner` with the bucket's keys.
    pub fn new(inner: SharedRemote, keys: Arc<Keyring>) -> Self {
        Encrypted { inner, keys }
    }

    fn name(&self, key: &str) -> Result<String, RemoteError> {
        self.keys.encrypt_name(key).map_err(|e| {
            RemoteError::new(
                RemoteErrorKind::Terminal,
                self.inner.endpoint(),
                format!("encrypting the name {key:?}: {e}"),
            )
        })
    }

    fn describe(&self, key: &str, mut obj: RemoteObject, record: EnvelopeRecord) -> RemoteObject {
        obj.key = key.to_owned();
        obj.size = record.size;
        obj.hash = record.hash.parse().ok();
        obj.content_type = Some(record.content_type);
        obj.metadata = record.metadata;
        obj.ferry_mtime = Some(record.mtime);
        obj.device = record.device;
        obj.base = record.base;
        obj.stamp = record.stamp;
        obj.has_metadata = true;
        obj
    }
}

#[async_trait::async_trait]
impl Layer for Encrypted {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        // Through `get`: the name must be encrypted and the envelope opened.
        crate::remote::read_prefix(self, key, len).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<crate::remote::RemotePage, RemoteError> {
        // Whole segments of the prefix are encrypted and listed; the rest
        // is matched after decryption. Pages follow the ciphertext names'
        // order, not the keys'.
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let listed = if dir.is_empty() {
            String::new()
        } else {
            format!("{}/", self.name(dir)?)
        };
        let page = self.inner.list_page(&listed, token).await?;
        let mut out = Vec::new();
        for mut obj in page.objects {
            if obj.key.starts_with(RESERVED_PREFIX) {
                continue;
            }
            match self.keys.decrypt_name(&obj.key) {
                Ok(name) if name.starts_with(prefix) => {
                    obj.key = name;
                    obj.hash = None;
                    obj.content_type = None;
                    obj.metadata = Metadata::new();
                    obj.ferry_mtime = None;
                    obj.has_metadata = false;
                    out.push(obj);
                }
                Ok(_) => {}
                Err(_) => {
                    obj.key = format!("{UNREADABLE_NAME}{}", obj.key);
                    out.push(obj);
                }
            }
        }
        Ok(crate::remote::RemotePage {
            objects: out,
            next: page.next,
        })
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        let name = self.name(key)?;
        let Some((obj, mut data)) = self.inner.get_prefix(&name, HEAD_READ).await? else {
            return Ok(None);
        };
        let total =
            envelope_len(&data).map_err(|e| integrity(&self.inner.endpoint(), key, e))? as u64;
        if (data.len() as u64) < total && total > HEAD_READ {
            // A longer envelope than ferry writes: read exactly it.
            match self.inner.get_prefix(&name, total).await? {
                Some((_, more)) => data = more,
                None => return Ok(None),
            }
        }
        let envelope = &data[..(total as usize).min(data.len())];
        let record = open_envelope(&self.keys, key, envelope)
            .map_err(|e| integrity(&self.inner.endpoint(), key, e))?;
        Ok(Some(self.describe(key, obj, record)))
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        let name = self.name(key)?;
        let (obj, mut reader) = self.inner.get(&name).await?;
        let endpoint = self.inner.endpoint();
        let read_err = |e: std::io::Error| {
            RemoteError::new(
                RemoteErrorKind::Retryable,
                endpoint.clone(),
                format!("reading {key}: {e}"),
            )
        };
        let mut envelope = vec![0u8; FIXED];
        read_full(&mut reader, &mut envelope)
            .await
            .map_err(read_err)?
            .then_some(())
            .ok_or_else(|| integrity(&endpoint, key, "the object is shorter than an envelope"))?;
        let total = envelope_len(&envelope).map_err(|e| integrity(&endpoint, key, e))?;
        envelope.resize(total, 0);
        read_full(&mut reader, &mut envelope[FIXED..])
            .await
            .map_err(read_err)?
            .then_some(())
            .ok_or_else(|| integrity(&endpoint, key, "the envelope is truncated"))?;
        let record =
            open_envelope(&self.keys, key, &envelope).map_err(|e| integrity(&endpoint, key, e))?;
        let mut header = vec![0u8; BLOB_HEADER];
        read_full(&mut reader, &mut header)
            .await
            .map_err(read_err)?
            .then_some(())
            .ok_or_else(|| integrity(&endpoint, key, "the sealed body is truncated"))?;
        if hex::encode(&header[8..]) != record.blob {
            return Err(integrity(
                &endpoint,
                key,
                "its body is not the one its envelope names (swapped or replayed)",
            ));
        }
        let body: RemoteReader =
            Box::new(AsyncReadExt::chain(std::io::Cursor::new(header), reader));
        Ok((self.describe(key, obj, record), body))
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        let name = self.name(&req.key)?;
        let local_err = |detail: String| {
            RemoteError::new(RemoteErrorKind::Terminal, self.inner.endpoint(), detail)
        };
        let header: Vec<u8> = match &body {
            RemoteBody::Bytes(b) => b.get(..BLOB_HEADER).map(<[u8]>::to_vec).unwrap_or_default(),
            RemoteBody::File(path) => {
                let mut h = vec![0u8; BLOB_HEADER];
                std::fs::File::open(path)
                    .and_then(|mut f| f.read_exact(&mut h))
                    .map_err(|e| local_err(format!("reading {}: {e}", path.display())))?;
                h
            }
            RemoteBody::Framed { .. } => {
                return Err(local_err("an encrypted put takes a sealed blob".into()))
            }
        };
        if header.len() != BLOB_HEADER || &header[..4] != b"FRYB" {
            return Err(local_err(format!(
                "the local content of {:?} is not a sealed blob",
                req.key
            )));
        }
        let record = EnvelopeRecord {
            hash: req.hash.to_hex(),
            size: req.size,
            content_type: req.content_type.clone(),
            metadata: req.metadata.clone(),
            mtime: req.mtime_ms,
            blob: hex::encode(&header[8..]),
            device: (!req.device.is_empty()).then(|| req.device.clone()),
            base: (!req.base.is_empty()).then(|| req.base.clone()),
            stamp: req.stamp,
        };
        let envelope = seal_envelope(&self.keys, &req.key, &record)
            .map_err(|e| local_err(format!("sealing the envelope of {:?}: {e}", req.key)))?;
        let body = match body {
            RemoteBody::Bytes(b) => {
                let mut all = envelope;
                all.extend_from_slice(&b);
                RemoteBody::Bytes(all.into())
            }
            RemoteBody::File(file) | RemoteBody::Framed { file, .. } => RemoteBody::Framed {
                head: Bytes::from(envelope),
                file,
            },
        };
        let sealed = PutRequest {
            key: name,
            content_type: crate::metadata::DEFAULT_CONTENT_TYPE.into(),
            metadata: Metadata::new(),
            hash: req.hash,
            size: 0,
            mtime_ms: 0,
            device: String::new(),
            base: String::new(),
            sealed: true,
            stamp: None,
            progress: req.progress.clone(),
        };
        self.inner.put(&sealed, body, cond).await
    }

    fn refuses(&self, key: &str) -> Option<String> {
        match self.keys.encrypt_name(key) {
            Ok(name) => self
                .inner
                .refuses(&name)
                .map(|why| format!("its encrypted name: {why}")),
            Err(e) => Some(format!("its name cannot be encrypted: {e}")),
        }
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let name = self.name(key)?;
        self.inner.delete(&name, cond).await
    }
}

/// Fills `buf`; false when the stream ended first.
async fn read_full(
    reader: &mut (dyn AsyncRead + Send + Unpin),
    buf: &mut [u8],
) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(false);
        }
        filled += n;
    }
    Ok(true)
}

/// What a remote holds, as far as encryption goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteMode {
    /// Nothing but ferry's bookkeeping: either kind of bucket may claim it.
    Empty,
    /// Objects and no key file: a plaintext remote (written by other
    /// tools, or by a ferry bucket before it recorded its mode).
    Plaintext,
    /// Objects, no key file, ferry's [`PLAINTEXT_RECORD`], and nothing that
    /// looks sealed: a remote a plaintext ferry bucket wrote.
    PlaintextByFerry,
    /// A key file: an encrypted remote.
    Encrypted(KeyFile),
}

impl RemoteMode {
    /// "encrypted", "plaintext" or "empty".
    pub fn describe(&self) -> &'static str {
        match self {
            RemoteMode::Empty => "empty",
            RemoteMode::Plaintext | RemoteMode::PlaintextByFerry => "plaintext",
            RemoteMode::Encrypted(_) => "encrypted",
        }
    }
}

/// Reads the remote's key file, if any.
pub async fn read_key_file(remote: &dyn Remote) -> Result<Option<KeyFile>, RemoteError> {
    let Some((_, data)) = remote.get_prefix(KEY_FILE, 64 * 1024).await? else {
        return Ok(None);
    };
    KeyFile::from_json(&data).map(Some).map_err(|e| {
        RemoteError::new(
            RemoteErrorKind::Integrity,
            remote.endpoint(),
            format!("{KEY_FILE} is unreadable: {e}"),
        )
    })
}

/// Finds out whether `remote` is encrypted, plaintext or empty.
pub async fn inspect(remote: &dyn Remote) -> Result<RemoteMode, RemoteError> {
    if let Some(file) = read_key_file(remote).await? {
        return Ok(RemoteMode::Encrypted(file));
    }
    // Pages until the first object that is not ferry's own: a large
    // remote costs one request, not its whole listing.
    let mut first: Vec<String>;
    let mut token = None;
    loop {
        let page = remote.list_page("", token).await?;
        first = page
            .objects
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.starts_with(RESERVED_PREFIX))
            .collect();
        if !first.is_empty() {
            break;
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let Some(sample) = first.first() else {
        return Ok(RemoteMode::Empty);
    };
    // Ferry's own plaintext record, and nothing that looks sealed (names
    // that could be encrypted ones, a body that starts with an envelope):
    // otherwise it is anyone's plaintext, or an encrypted remote whose key
    // file is gone, and the caller must choose.
    if remote.head(PLAINTEXT_RECORD).await?.is_none()
        || first.iter().all(|k| looks_like_encrypted_name(k))
    {
        return Ok(RemoteMode::Plaintext);
    }
    let starts_sealed = match remote.get_prefix(sample, MAGIC.len() as u64).await? {
        Some((_, head)) => head.starts_with(MAGIC),
        None => false,
    };
    Ok(if starts_sealed {
        RemoteMode::Plaintext
    } else {
        RemoteMode::PlaintextByFerry
    })
}

/// Whether `name` could be an encrypted name: every segment base64url
/// without padding, at least an AES-SIV tag (16 bytes) long.
fn looks_like_encrypted_name(name: &str) -> bool {
    name.split('/').all(|seg| {
        seg.len() >= 22
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Writes the [`PLAINTEXT_RECORD`] (once: a record already there is kept).
pub async fn write_plaintext_record(remote: &dyn Remote) -> Result<(), RemoteError> {
    let json = br#"{"mode":"plaintext","version":1}"#;
    let req = PutRequest {
        key: PLAINTEXT_RECORD.into(),
        content_type: "application/json".into(),
        metadata: Metadata::new(),
        hash: ContentHash::of(json),
        size: json.len() as u64,
        mtime_ms: 0,
        device: String::new(),
        sealed: true,
        base: String::new(),
        stamp: None,
        progress: crate::remote::TransferProgress::none(),
    };
    match remote
        .put(
            &req,
            RemoteBody::Bytes(Bytes::from_static(json)),
            Precondition::IfAbsent,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind == RemoteErrorKind::PreconditionFailed => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `file` as the remote's key file (only if there is none yet when
/// `cond` is `IfAbsent`; replacing a known version with `IfMatch`).
pub async fn write_key_file(
    remote: &dyn Remote,
    file: &KeyFile,
    cond: Precondition,
) -> Result<String, RemoteError> {
    let json = file.to_json().map_err(|e| {
        RemoteError::new(
            RemoteErrorKind::Terminal,
            remote.endpoint(),
            format!("encoding the key file: {e}"),
        )
    })?;
    let req = PutRequest {
        key: KEY_FILE.into(),
        content_type: "application/json".into(),
        metadata: Metadata::new(),
        hash: ContentHash::of(json.as_bytes()),
        size: json.len() as u64,
        mtime_ms: 0,
        device: String::new(),
        sealed: true,
        base: String::new(),
        stamp: None,
        progress: crate::remote::TransferProgress::none(),
    };
    remote
        .put(&req, RemoteBody::Bytes(json.into_bytes().into()), cond)
        .await
}

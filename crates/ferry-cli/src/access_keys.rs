//! The access keys of `ferry serve`: the key file (`serve-keys.json`, the
//! owner's pair made at the first `serve` and the apps' keys `ferry serve
//! keys add` makes), ferry.toml's `[serve.keys.NAME]`, the `ferry serve
//! keys add|ls|rm` commands, and [`LiveKeys`], the source the running
//! gateway asks on every signed request.
//!
//! Invariants:
//! - The key file is written whole, through a new temp file of mode 0600
//!   (a leftover one is removed first, so the mode always holds), fsynced
//!   and renamed over the old one; changes to it (`add`, `rm`, the owner's
//!   pair) are made under an OS lock on `serve-keys.lock` beside it, so two
//!   commands at once do not lose each other's key.
//! - No secret reaches `Debug` output; a new app key's secret is printed
//!   once, by `add`, to standard output.
//! - A running `serve` sees `add` and `rm` at its next signed request (it
//!   reads the file again when its inode, size or mtime changed); a file it
//!   cannot read gives no app keys from it (fail closed), with a warning.
//!   `[serve.keys]` in ferry.toml is read when `serve` starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

use crate::args::{Global, ServeKeysArgs, ServeKeysCommand};
use crate::config::{Access, StoredKey};
use crate::{config, locate, CommandError};

/// The key file, in the bucket directory (or the `--buckets` directory).
pub const KEY_FILE: &str = "serve-keys.json";

/// The lock file that orders changes to the key file.
const LOCK_FILE: &str = "serve-keys.lock";

/// The shortest secret accepted in `[serve.keys.NAME]`.
const MIN_SECRET: usize = 16;

impl StoredKey {
    fn app_key(&self, name: &str) -> ferry_gateway::AppKey {
        ferry_gateway::AppKey {
            name: name.to_owned(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            buckets: self.buckets.clone(),
            rights: match self.access {
                Access::Read => ferry_gateway::Rights::Read,
                Access::Write => ferry_gateway::Rights::Write,
            },
        }
    }
}

/// The key file: the owner's pair (when no other place gives one) and
/// the apps' keys. A file of an earlier version (the pair alone) reads as
/// one without app keys.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct KeyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, StoredKey>,
}

impl KeyFile {
    /// Reads `path`: `None` when there is no file.
    pub fn read(path: &Path) -> anyhow::Result<Option<KeyFile>> {
        match std::fs::read(path) {
            Ok(text) => Ok(Some(
                serde_json::from_slice(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `path` whole (see the module's invariants).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self).context("encoding the keys")?)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        if let Some(dir) = path.parent() {
            // The rename itself survives a crash once the directory is synced.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

/// Holds the OS lock that orders changes to the key file in `dir` until
/// dropped.
pub fn lock(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(f)
}

/// A new random key pair: `FERRY` and 16 hex digits, and 40 hex digits of
/// secret, from the OS RNG like every key ferry makes.
pub fn random_pair() -> Result<(String, String), CommandError> {
    let random = |e: ferry::crypto::CryptoError| CommandError::from(anyhow::anyhow!("{e}"));
    Ok((
        format!(
            "FERRY{}",
            hex::encode_upper(ferry::crypto::random::bytes::<8>().map_err(random)?)
        ),
        hex::encode(ferry::crypto::random::bytes::<20>().map_err(random)?),
    ))
}

/// Whether `name` may name a key: 1 to 64 of `a-z A-Z 0-9 - _ .`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether `name` may be a bucket a key reaches: a name `serve` serves,
/// which S3's rules allow or a folder of one or two letters and digits
/// (served under its own name).
fn valid_bucket(name: &str) -> bool {
    ferry_gateway::store::valid_bucket_name(name)
        || ((1..=2).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

/// `[serve.keys]` of the configuration files, checked: each names valid
/// buckets and has a long secret.
fn configured(file: &config::FileConfig) -> Result<BTreeMap<String, StoredKey>, CommandError> {
    let keys = file
        .serve_section()
        .map(|s| s.keys.clone())
        .unwrap_or_default();
    for (name, k) in &keys {
        let bad = |what: String| {
            CommandError::user(
                format!("[serve.keys.{name}]: {what}"),
                "fix it in ferry.toml, or remove it and use `ferry serve keys add`",
            )
        };
        if !valid_name(name) {
            return Err(bad(
                "a key name is 1 to 64 of a-z, A-Z, 0-9, `-`, `_`, `.`".into()
            ));
        }
        if k.secret_access_key.len() < MIN_SECRET {
            return Err(bad(format!(
                "the secret is shorter than {MIN_SECRET} characters"
            )));
        }
        if k.access_key_id.is_empty() {
            return Err(bad("the access key id is empty".into()));
        }
        if k.buckets.is_empty() {
            return Err(bad("no buckets (buckets = [\"NAME\", ...])".into()));
        }
        if let Some(b) = k.buckets.iter().find(|b| !valid_bucket(b)) {
            return Err(bad(format!("{b:?} is not a valid S3 bucket name")));
        }
    }
    Ok(keys)
}

/// The app keys a running gateway asks for: ferry.toml's, read at start,
/// and the key file's, read again whenever the file changes.
pub struct LiveKeys {
    path: PathBuf,
    owner_id: String,
    configured: BTreeMap<String, StoredKey>,
    state: Mutex<(Option<Stamp>, Arc<Vec<ferry_gateway::AppKey>>)>,
}

/// What tells one version of the key file from another.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

impl LiveKeys {
    /// The keys of `file` (`[serve.keys]`) and of the key file in `dir`;
    /// `owner_id` is the owner's access key id, which no app key may use.
    pub fn new(
        file: &config::FileConfig,
        dir: &Path,
        owner_id: &str,
    ) -> Result<Self, CommandError> {
        let live = LiveKeys {
            path: dir.join(KEY_FILE),
            owner_id: owner_id.to_owned(),
            configured: configured(file)?,
            state: Mutex::new((None, Arc::new(Vec::new()))),
        };
        let stored = KeyFile::read(&live.path)?.unwrap_or_default().keys;
        if let Some(name) = stored.keys().find(|n| live.configured.contains_key(*n)) {
            return Err(CommandError::user(
                format!("the key {name:?} is both in [serve.keys] and in {KEY_FILE}"),
                format!("remove one: `ferry serve keys rm {name}` or [serve.keys.{name}]"),
            ));
        }
        let all: Vec<_> = live.merged(&stored);
        let mut ids: Vec<&str> = all.iter().map(|k| k.access_key_id.as_str()).collect();
        ids.push(owner_id);
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(CommandError::user(
                format!("two serve keys have the access key id {:?}", w[0]),
                "give each key (and the owner's pair) its own access key id",
            ));
        }
        *live.lock_state() = (stamp(&live.path), Arc::new(all));
        Ok(live)
    }

    fn lock_state(
        &self,
    ) -> std::sync::MutexGuard<'_, (Option<Stamp>, Arc<Vec<ferry_gateway::AppKey>>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// ferry.toml's keys and `stored` (ferry.toml's win a name or an id
    /// both use; none may use the owner's id).
    fn merged(&self, stored: &BTreeMap<String, StoredKey>) -> Vec<ferry_gateway::AppKey> {
        let mut out: Vec<ferry_gateway::AppKey> =
            self.configured.iter().map(|(n, k)| k.app_key(n)).collect();
        for (n, k) in stored {
            let taken = self.configured.contains_key(n)
                || k.access_key_id == self.owner_id
                || out.iter().any(|o| o.access_key_id == k.access_key_id);
            if !taken {
                out.push(k.app_key(n));
            }
        }
        out
    }
}

impl ferry_gateway::AppKeys for LiveKeys {
    fn current(&self) -> Arc<Vec<ferry_gateway::AppKey>> {
        let now = stamp(&self.path);
        let mut state = self.lock_state();
        if state.0 != now {
            let stored = match KeyFile::read(&self.path) {
                Ok(f) => f.unwrap_or_default().keys,
                Err(e) => {
                    eprintln!(
                        "warning: {e:#}; the keys stored there are refused until it reads again"
                    );
                    BTreeMap::new()
                }
            };
            *state = (now, Arc::new(self.merged(&stored)));
        }
        state.1.clone()
    }
}

/// Where `serve` keeps its key file: the `--buckets` directory, else the
/// bucket directory.
fn key_dir(global: &Global, buckets: Option<&Path>) -> Result<PathBuf, CommandError> {
    match buckets {
        Some(d) => Ok(d.to_owned()),
        None => locate::bucket_dir(global),
    }
}

/// The configuration files `serve` reads for the same directory.
fn file_config(dir: &Path, buckets: bool) -> Result<config::FileConfig, CommandError> {
    Ok(if buckets {
        config::load_layers(None)?
    } else {
        config::load(dir)?
    })
}

/// `ferry serve keys add|ls|rm`.
pub fn keys(global: &Global, args: &ServeKeysArgs) -> Result<(), CommandError> {
    let dir = key_dir(global, args.buckets.as_deref())?;
    let file = file_config(&dir, args.buckets.is_some())?;
    let path = dir.join(KEY_FILE);
    match &args.command {
        ServeKeysCommand::Add {
            name,
            buckets,
            read_only,
        } => {
            if !valid_name(name) {
                return Err(CommandError::user(
                    format!("{name:?} cannot name a key"),
                    "use 1 to 64 of a-z, A-Z, 0-9, `-`, `_`, `.`",
                ));
            }
            if let Some(b) = buckets.iter().find(|b| !valid_bucket(b)) {
                return Err(CommandError::user(
                    format!("{b:?} is not a valid S3 bucket name"),
                    "name the buckets as S3 clients do (3 to 63 of a-z, 0-9, `-`, `.`)",
                ));
            }
            if configured(&file)?.contains_key(name) {
                return Err(CommandError::user(
                    format!("a key {name:?} is already in [serve.keys]"),
                    "choose another name",
                ));
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let _lock = lock(&dir)?;
            let mut stored = KeyFile::read(&path)?.unwrap_or_default();
            if stored.keys.contains_key(name) {
                return Err(CommandError::user(
                    format!("a key {name:?} exists"),
                    format!("choose another name, or `ferry serve keys rm {name}` first"),
                ));
            }
            let (access_key_id, secret_access_key) = random_pair()?;
            let access = if *read_only {
                Access::Read
            } else {
                Access::Write
            };
            stored.keys.insert(
                name.clone(),
                StoredKey {
                    access_key_id: access_key_id.clone(),
                    secret_access_key: secret_access_key.clone(),
                    buckets: buckets.clone(),
                    access,
                },
            );
            stored.write(&path)?;
            println!("key {name}: {} on {}", access.as_str(), buckets.join(", "));
            println!("access key id: {access_key_id}");
            println!("secret access key: {secret_access_key}");
            if !global.quiet {
                eprintln!(
                    "the secret is shown only now (it is stored in {}); a running `ferry serve` accepts the key at once",
                    path.display()
                );
            }
            Ok(())
        }
        ServeKeysCommand::Ls { json } => {
            let mut rows: Vec<(String, StoredKey, &str)> = configured(&file)?
                .into_iter()
                .map(|(n, k)| (n, k, "ferry.toml"))
                .collect();
            rows.extend(
                KeyFile::read(&path)?
                    .unwrap_or_default()
                    .keys
                    .into_iter()
                    .map(|(n, k)| (n, k, KEY_FILE)),
            );
            if *json {
                let out: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|(n, k, from)| {
                        serde_json::json!({
                            "name": n,
                            "access_key_id": k.access_key_id,
                            "access": k.access.as_str(),
                            "buckets": k.buckets,
                            "source": from,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).context("encoding the keys")?
                );
            } else if rows.is_empty() {
                if !global.quiet {
                    eprintln!("no app keys (add one with `ferry serve keys add NAME BUCKET`)");
                }
            } else {
                let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
                let id_width = rows
                    .iter()
                    .map(|r| r.1.access_key_id.len())
                    .max()
                    .unwrap_or(0);
                for (n, k, from) in &rows {
                    println!(
                        "{n:width$}  {:id_width$}  {:5}  {}  ({from})",
                        k.access_key_id,
                        k.access.as_str(),
                        k.buckets.join(",")
                    );
                }
            }
            Ok(())
        }
        ServeKeysCommand::Rm { name } => {
            let _lock = lock(&dir)?;
            let mut stored = KeyFile::read(&path)?.unwrap_or_default();
            if stored.keys.remove(name).is_none() {
                let hint = match (configured(&file)?.contains_key(name), file.serve_file()) {
                    (true, Some(toml)) => {
                        format!(
                            "it is [serve.keys.{name}] in {}: remove it there",
                            toml.display()
                        )
                    }
                    _ => "`ferry serve keys ls` lists the keys".to_owned(),
                };
                return Err(CommandError::user(
                    format!("no key {name:?} in {}", path.display()),
                    hint,
                ));
            }
            stored.write(&path)?;
            if !global.quiet {
                eprintln!("removed the key {name}; a running `ferry serve` refuses it at once");
            }
            Ok(())
        }
    }
}

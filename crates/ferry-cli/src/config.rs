//! The CLI's configuration, read here and handed to the library as values:
//! the user's `$XDG_CONFIG_HOME/ferry/config.toml` (defaults for every
//! bucket), the bucket's `ferry.toml`, the usual `AWS_*` variables, flags.
//!
//! Precedence, lowest first: built-in defaults, the user config, the
//! bucket's `ferry.toml`, then the environment and flags.
//!
//! - Sync settings (`[sync]`): the user's, then the bucket's, key by key.
//!   They are written into the bucket's index whenever a command opens it
//!   (and by `ferry watch` when a file changes), so running engines and
//!   every process use them. When no file has a `[sync]` section, the
//!   index keeps what it has.
//! - Credentials: `AWS_*` variables, then the bucket's `[credentials]`, then
//!   the profile it names (`profile = "NAME"`, or `FERRY_PROFILE`) from the
//!   user config's `[profiles.NAME]`, then the user's `[credentials]`.
//! - Endpoint and region: flags, then what the bucket records, then
//!   `AWS_ENDPOINT_URL` / `AWS_REGION` (`AWS_DEFAULT_REGION`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use ferry::remote::spec::{Credentials, RemoteSpec};
use ferry::SyncConfig;

use crate::CommandError;

/// The data directory `ferry init` creates by default and discovery looks for.
pub const DEFAULT_DIR: &str = ".ferry";

/// A credential set.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Path of a Google service account's JSON key (GCS).
    pub gcs_service_account_file: Option<String>,
    /// An Azure storage connection string (`AccountName=…;AccountKey=…;…`).
    pub azure_connection_string: Option<String>,
    /// An Azure storage account key (base64).
    pub azure_storage_key: Option<String>,
    /// An Azure SAS token.
    pub azure_sas_token: Option<String>,
    /// WebDAV basic-auth user name.
    pub webdav_user: Option<String>,
    /// WebDAV basic-auth password.
    pub webdav_password: Option<String>,
    /// A URL signer's bearer token (`signer+https://` remotes).
    pub signer_token: Option<String>,
}

/// `[serve]`: the owner's access key pair of `ferry serve`, the apps'
/// keys and the signer's bearer tokens (no secret in `Debug`).
#[derive(Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The longest a signed URL lives, in seconds (default 900).
    pub signer_max_expiry_secs: Option<u64>,
    /// Bearer tokens of the app endpoints, by name.
    #[serde(default)]
    pub tokens: std::collections::BTreeMap<String, TokenSection>,
    /// The apps' S3 access keys, by name.
    #[serde(default)]
    pub keys: std::collections::BTreeMap<String, StoredKey>,
}

impl std::fmt::Debug for ServeSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeSection")
            .field("access_key_id", &self.access_key_id)
            .field("signer_max_expiry_secs", &self.signer_max_expiry_secs)
            .field("tokens", &self.tokens)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// `[serve.tokens.NAME]` (the token is not in `Debug`).
#[derive(Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub token: String,
    /// Key prefixes it may touch (default: every key).
    #[serde(default = "every_key")]
    pub prefixes: Vec<String>,
    /// upload, download, delete, list, status (default: all).
    #[serde(default)]
    pub verbs: Vec<String>,
}

impl std::fmt::Debug for TokenSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSection")
            .field("prefixes", &self.prefixes)
            .field("verbs", &self.verbs)
            .finish_non_exhaustive()
    }
}

fn every_key() -> Vec<String> {
    vec![String::new()]
}

/// One configuration file as written.
#[derive(Debug, Default, Clone)]
struct Layer {
    path: PathBuf,
    credentials: CredentialsSection,
    serve: Option<ServeSection>,
    profile: Option<String>,
    profiles: std::collections::BTreeMap<String, CredentialsSection>,
    sync: Option<toml::Table>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    UserFile(PathBuf),
    UserProfile(PathBuf, String),
    BucketFile(PathBuf),
    Env(&'static str),
    Index,
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::UserFile(p) => write!(f, "user config {}", p.display()),
            Source::UserProfile(p, name) => {
                write!(f, "user config {} [profiles.{name}]", p.display())
            }
            Source::BucketFile(p) => write!(f, "bucket config {}", p.display()),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Index => write!(f, "the bucket's index"),
            Source::Unset => write!(f, "not set"),
        }
    }
}

/// The effective configuration of one command.
#[derive(Debug, Default, Clone)]
pub struct FileConfig {
    user: Option<Layer>,
    bucket: Option<Layer>,
    /// The user config's path, whether or not it exists.
    pub user_path: Option<PathBuf>,
    /// The merged sync settings, when a file has a `[sync]` section.
    pub sync: Option<SyncConfig>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `$XDG_CONFIG_HOME/ferry/config.toml`, else `$HOME/.config/ferry/config.toml`.
pub fn user_config_path() -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferry").join("config.toml"))
}

/// The sync setting names (the fields of `SyncConfig`).
fn sync_fields() -> Vec<String> {
    match serde_json::to_value(SyncConfig::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Reads one file: `None` when it does not exist; unknown sections or
/// settings are errors naming the file and the field.
fn read_layer(path: &Path, user: bool) -> anyhow::Result<Option<Layer>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let bad = |what: String| anyhow!("{}: {what}", path.display());
    let mut layer = Layer {
        path: path.to_owned(),
        ..Layer::default()
    };
    for (name, value) in table {
        match (name.as_str(), user) {
            ("credentials", _) => {
                layer.credentials = value
                    .try_into()
                    .map_err(|e| bad(format!("[credentials]: {e}")))?;
            }
            ("serve", _) => {
                layer.serve = Some(value.try_into().map_err(|e| bad(format!("[serve]: {e}")))?);
            }
            ("profile", false) => {
                layer.profile = Some(
                    value
                        .as_str()
                        .ok_or_else(|| bad("`profile` must be a string".into()))?
                        .to_owned(),
                );
            }
            ("profiles", true) => {
                layer.profiles = value
                    .try_into()
                    .map_err(|e| bad(format!("[profiles]: {e}")))?;
            }
            ("sync", _) => {
                let sync = match value {
                    toml::Value::Table(t) => t,
                    _ => return Err(bad("[sync] must be a table".into())),
                };
                let known = sync_fields();
                if let Some(unknown) = sync.keys().find(|k| !known.contains(k)) {
                    return Err(bad(format!(
                        "unknown setting `{unknown}` in [sync] (known: {})",
                        known.join(", ")
                    )));
                }
                toml::Value::Table(sync.clone())
                    .try_into::<SyncConfig>()
                    .map_err(|e| bad(format!("[sync]: {e}")))?;
                layer.sync = Some(sync);
            }
            (other, _) => {
                let known = if user {
                    "credentials, profiles, serve, sync"
                } else {
                    "credentials, profile, serve, sync"
                };
                return Err(bad(format!("unknown field `{other}` (known: {known})")));
            }
        }
    }
    Ok(Some(layer))
}

/// The bucket's `ferry.toml`: in the bucket directory, or beside it when
/// the bucket is the usual `.ferry` folder (`photos/ferry.toml` for
/// `photos/.ferry`, which is what "the bucket's folder" reads as). Both at
/// once is refused: which one wins would be a guess.
pub fn bucket_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let inside = dir.join("ferry.toml");
    let beside = (dir.file_name() == Some(std::ffi::OsStr::new(DEFAULT_DIR)))
        .then(|| dir.parent().map(|p| p.join("ferry.toml")))
        .flatten();
    match beside {
        Some(beside) if beside.is_file() => {
            if inside.is_file() {
                return Err(anyhow!(
                    "two bucket config files: {} and {}; keep one (they would not be merged)",
                    inside.display(),
                    beside.display()
                ));
            }
            Ok(beside)
        }
        _ => Ok(inside),
    }
}

/// Reads the user config and, when given, the bucket's `ferry.toml`.
pub fn load_layers(bucket_dir: Option<&Path>) -> anyhow::Result<FileConfig> {
    let user_path = user_config_path();
    let user = match &user_path {
        Some(p) => read_layer(p, true)?,
        None => None,
    };
    let bucket = match bucket_dir {
        Some(dir) => read_layer(&bucket_file(dir)?, false)?,
        None => None,
    };
    let mut merged: Option<toml::Table> = None;
    for layer in [&user, &bucket].into_iter().flatten() {
        if let Some(sync) = &layer.sync {
            merged
                .get_or_insert_with(toml::Table::new)
                .extend(sync.clone());
        }
    }
    let sync = match merged {
        Some(t) => Some(
            toml::Value::Table(t)
                .try_into::<SyncConfig>()
                .map_err(|e| anyhow!("the merged [sync] settings: {e}"))?,
        ),
        None => None,
    };
    let config = FileConfig {
        user,
        bucket,
        user_path,
        sync,
    };
    // A profile that is named must exist.
    if let Some((name, _)) = config.profile() {
        if config.profile_section(&name).is_none() {
            let user_file = config
                .user_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the user config".into());
            return Err(anyhow!(
                "the credentials profile {name:?} is not defined (add [profiles.{name}] to {user_file})"
            ));
        }
    }
    Ok(config)
}

/// Reads the bucket's `ferry.toml` ([`bucket_file`]) and the user config.
pub fn load(bucket_dir: &Path) -> anyhow::Result<FileConfig> {
    load_layers(Some(bucket_dir))
}

impl FileConfig {
    /// The profile in use and who chose it.
    fn profile(&self) -> Option<(String, Source)> {
        if let Some(p) = env("FERRY_PROFILE") {
            return Some((p, Source::Env("FERRY_PROFILE")));
        }
        let b = self.bucket.as_ref()?;
        Some((b.profile.clone()?, Source::BucketFile(b.path.clone())))
    }

    fn profile_section(&self, name: &str) -> Option<&CredentialsSection> {
        self.user.as_ref()?.profiles.get(name)
    }

    /// One credential field and where it came from.
    /// `ferry serve`'s key pair: the bucket file's `[serve]`, else the
    /// user file's (the environment is read by the caller).
    pub fn serve_section(&self) -> Option<&ServeSection> {
        [&self.bucket, &self.user]
            .into_iter()
            .flatten()
            .find_map(|l| l.serve.as_ref())
    }

    /// The file `[serve]` was read from (see [`Self::serve_section`]).
    pub fn serve_file(&self) -> Option<&Path> {
        [&self.bucket, &self.user]
            .into_iter()
            .flatten()
            .find(|l| l.serve.is_some())
            .map(|l| l.path.as_path())
    }

    pub fn serve_keys(&self) -> Option<(String, String)> {
        [&self.bucket, &self.user]
            .into_iter()
            .flatten()
            .find_map(|l| {
                let s = l.serve.as_ref()?;
                Some((s.access_key_id.clone()?, s.secret_access_key.clone()?))
            })
    }

    fn credential(
        &self,
        var: &'static str,
        field: fn(&CredentialsSection) -> &Option<String>,
    ) -> (Option<String>, Source) {
        if let Some(v) = env(var) {
            return (Some(v), Source::Env(var));
        }
        if let Some(b) = &self.bucket {
            if let Some(v) = field(&b.credentials) {
                return (Some(v.clone()), Source::BucketFile(b.path.clone()));
            }
        }
        if let (Some((name, _)), Some(u)) = (self.profile(), &self.user) {
            if let Some(v) = self.profile_section(&name).and_then(|s| field(s).clone()) {
                return (Some(v), Source::UserProfile(u.path.clone(), name));
            }
        }
        if let Some(u) = &self.user {
            if let Some(v) = field(&u.credentials) {
                return (Some(v.clone()), Source::UserFile(u.path.clone()));
            }
        }
        (None, Source::Unset)
    }

    /// Where one sync setting came from.
    fn sync_source(&self, name: &str) -> Source {
        for layer in [&self.bucket, &self.user].into_iter().flatten() {
            if layer.sync.as_ref().is_some_and(|t| t.contains_key(name)) {
                return if Some(layer) == self.bucket.as_ref() {
                    Source::BucketFile(layer.path.clone())
                } else {
                    Source::UserFile(layer.path.clone())
                };
            }
        }
        if self.sync.is_some() {
            Source::Default
        } else {
            Source::Index
        }
    }

    /// Every effective setting: (name, value, source); secrets are masked.
    pub fn show(
        &self,
        bucket: Option<&ferry::Bucket>,
    ) -> anyhow::Result<Vec<(String, String, Source)>> {
        let mut rows = Vec::new();
        if let Some((name, source)) = self.profile() {
            rows.push(("profile".to_owned(), name, source));
        }
        let mask = |v: &str| {
            if v.len() > 4 {
                format!(
                    "{}…",
                    &v[..v.char_indices().nth(4).map_or(v.len(), |(i, _)| i)]
                )
            } else {
                "…".to_owned()
            }
        };
        for (name, var, field, secret) in [
            (
                "access_key_id",
                "AWS_ACCESS_KEY_ID",
                (|c: &CredentialsSection| &c.access_key_id)
                    as fn(&CredentialsSection) -> &Option<String>,
                false,
            ),
            (
                "secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
                |c| &c.secret_access_key,
                true,
            ),
            (
                "session_token",
                "AWS_SESSION_TOKEN",
                |c| &c.session_token,
                true,
            ),
            (
                "gcs_service_account_file",
                "GOOGLE_APPLICATION_CREDENTIALS",
                |c| &c.gcs_service_account_file,
                false,
            ),
            (
                "azure_connection_string",
                "AZURE_STORAGE_CONNECTION_STRING",
                |c| &c.azure_connection_string,
                true,
            ),
            (
                "azure_storage_key",
                "AZURE_STORAGE_KEY",
                |c| &c.azure_storage_key,
                true,
            ),
            (
                "azure_sas_token",
                "AZURE_STORAGE_SAS_TOKEN",
                |c| &c.azure_sas_token,
                true,
            ),
            (
                "webdav_user",
                "FERRY_WEBDAV_USER",
                |c| &c.webdav_user,
                false,
            ),
            (
                "webdav_password",
                "FERRY_WEBDAV_PASSWORD",
                |c| &c.webdav_password,
                true,
            ),
            (
                "signer_token",
                "FERRY_SIGNER_TOKEN",
                |c| &c.signer_token,
                true,
            ),
        ] {
            let (value, source) = self.credential(var, field);
            let shown = match (value, secret) {
                (None, _) => "-".to_owned(),
                (Some(_), true) => "(hidden)".to_owned(),
                (Some(v), false) => mask(&v),
            };
            rows.push((format!("credentials.{name}"), shown, source));
        }
        // `ferry serve`'s keys and bearer tokens: where they come from,
        // never their secrets.
        if let Some((serve, source)) = [(&self.bucket, true), (&self.user, false)]
            .into_iter()
            .find_map(|(l, b)| {
                l.as_ref()
                    .and_then(|l| l.serve.as_ref().map(|s| (s, l.path.clone(), b)))
            })
            .map(|(s, path, b)| {
                (
                    s,
                    if b {
                        Source::BucketFile(path)
                    } else {
                        Source::UserFile(path)
                    },
                )
            })
        {
            if let Some(id) = &serve.access_key_id {
                rows.push(("serve.access_key_id".into(), mask(id), source.clone()));
            }
            if serve.secret_access_key.is_some() {
                rows.push((
                    "serve.secret_access_key".into(),
                    "(hidden)".into(),
                    source.clone(),
                ));
            }
            for (name, k) in &serve.keys {
                rows.push((
                    format!("serve.keys.{name}"),
                    format!(
                        "{} (secret hidden) {} {:?}",
                        mask(&k.access_key_id),
                        k.access.as_str(),
                        k.buckets
                    ),
                    source.clone(),
                ));
            }
            for (name, t) in &serve.tokens {
                let verbs = if t.verbs.is_empty() {
                    "every verb".to_owned()
                } else {
                    t.verbs.join(",")
                };
                rows.push((
                    format!("serve.tokens.{name}"),
                    format!("(hidden) prefixes {:?}, {verbs}", t.prefixes),
                    source.clone(),
                ));
            }
        }
        if let Some(bucket) = bucket {
            match bucket.remote_spec()? {
                Some(spec) => {
                    rows.push(("remote".into(), spec.url.clone(), Source::Index));
                    let effective = with_env_defaults(spec.clone());
                    let (ep_source, region_source) = (
                        if spec.endpoint.is_some() {
                            Source::Index
                        } else if effective.endpoint.is_some() {
                            Source::Env("AWS_ENDPOINT_URL")
                        } else {
                            Source::Unset
                        },
                        if spec.region.is_some() {
                            Source::Index
                        } else if env("AWS_REGION").is_some() {
                            Source::Env("AWS_REGION")
                        } else if env("AWS_DEFAULT_REGION").is_some() {
                            Source::Env("AWS_DEFAULT_REGION")
                        } else {
                            Source::Unset
                        },
                    );
                    rows.push((
                        "endpoint".into(),
                        effective.endpoint.clone().unwrap_or_else(|| "-".into()),
                        ep_source,
                    ));
                    rows.push((
                        "region".into(),
                        effective.region.clone().unwrap_or_else(|| "-".into()),
                        region_source,
                    ));
                }
                None => rows.push(("remote".into(), "-".into(), Source::Unset)),
            }
        }
        let sync = match (&self.sync, bucket) {
            (Some(s), _) => *s,
            (None, Some(b)) => b.sync_config()?,
            (None, None) => SyncConfig::default(),
        };
        if let serde_json::Value::Object(map) = serde_json::to_value(sync)? {
            for (name, value) in map {
                let shown = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let source = match (bucket, self.sync_source(&name)) {
                    (None, Source::Index) => Source::Default,
                    (_, s) => s,
                };
                rows.push((format!("sync.{name}"), shown, source));
            }
        }
        Ok(rows)
    }
}

/// Credentials by the precedence above.
pub fn credentials(file: &FileConfig) -> Result<Credentials, CommandError> {
    let gcs = file
        .credential("GOOGLE_APPLICATION_CREDENTIALS", |c| {
            &c.gcs_service_account_file
        })
        .0;
    let gcs_service_account = match gcs {
        None => None,
        Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
            CommandError::user(
                format!("reading the Google service-account key {path}: {e}"),
                "GOOGLE_APPLICATION_CREDENTIALS (or gcs_service_account_file in [credentials]) names a service account's JSON key file",
            )
        })?),
    };
    let connection = azure_connection(file);
    let azure = if let Some(key) = connection.get("accountkey") {
        ferry::remote::azure::AzureAuth::SharedKey(key.clone())
    } else if let Some(sas) = connection.get("sharedaccesssignature") {
        ferry::remote::azure::AzureAuth::Sas(sas.clone())
    } else if let Some(key) = file
        .credential("AZURE_STORAGE_KEY", |c| &c.azure_storage_key)
        .0
    {
        ferry::remote::azure::AzureAuth::SharedKey(key)
    } else if let Some(sas) = file
        .credential("AZURE_STORAGE_SAS_TOKEN", |c| &c.azure_sas_token)
        .0
    {
        ferry::remote::azure::AzureAuth::Sas(sas)
    } else {
        ferry::remote::azure::AzureAuth::Anonymous
    };
    Ok(Credentials {
        azure,
        access_key_id: file.credential("AWS_ACCESS_KEY_ID", |c| &c.access_key_id).0,
        secret_access_key: file
            .credential("AWS_SECRET_ACCESS_KEY", |c| &c.secret_access_key)
            .0,
        session_token: file.credential("AWS_SESSION_TOKEN", |c| &c.session_token).0,
        gcs_service_account,
        webdav_user: file.credential("FERRY_WEBDAV_USER", |c| &c.webdav_user).0,
        webdav_password: file
            .credential("FERRY_WEBDAV_PASSWORD", |c| &c.webdav_password)
            .0,
        signer_token: file.credential("FERRY_SIGNER_TOKEN", |c| &c.signer_token).0,
    })
}

/// The fields of the Azure connection string (names lowercased), from
/// `AZURE_STORAGE_CONNECTION_STRING` or `azure_connection_string`.
fn azure_connection(file: &FileConfig) -> std::collections::BTreeMap<String, String> {
    file.credential("AZURE_STORAGE_CONNECTION_STRING", |c| {
        &c.azure_connection_string
    })
    .0
    .unwrap_or_default()
    .split(';')
    .filter_map(|field| field.split_once('='))
    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
    .collect()
}

/// Fills what the spec leaves open from the environment: for `s3://`,
/// endpoint and region from `AWS_ENDPOINT_URL` / `AWS_REGION`; for
/// `gs://`, the endpoint from `STORAGE_EMULATOR_HOST` (Google's variable
/// for emulators); for `az://`, the endpoint from the connection string's
/// `BlobEndpoint` (Azurite's form, with the account in the path).
pub fn with_env_defaults(mut spec: RemoteSpec) -> RemoteSpec {
    match spec.kind() {
        Ok(ferry::remote::spec::RemoteKind::S3 { .. }) => {
            if spec.endpoint.is_none() {
                spec.endpoint = env("AWS_ENDPOINT_URL");
            }
            if spec.region.is_none() {
                spec.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
            }
        }
        Ok(ferry::remote::spec::RemoteKind::Gcs { .. }) if spec.endpoint.is_none() => {
            spec.endpoint = env("STORAGE_EMULATOR_HOST").map(|h| {
                if h.contains("://") {
                    h
                } else {
                    format!("http://{h}")
                }
            });
        }
        Ok(ferry::remote::spec::RemoteKind::Azure { .. }) if spec.endpoint.is_none() => {
            spec.endpoint = env("AZURE_STORAGE_CONNECTION_STRING").and_then(|cs| {
                cs.split(';')
                    .filter_map(|f| f.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("BlobEndpoint"))
                    .map(|(_, v)| v.trim().to_owned())
            });
        }
        _ => {}
    }
    spec
}

/// Writes the files' sync settings into the bucket's index when they
/// differ from what it holds (a lower cache limit evicts at once). A
/// read-only bucket is left as it is.
pub async fn apply(bucket: &ferry::Bucket, file: &FileConfig) -> Result<bool, ferry::Error> {
    let Some(sync) = file.sync else {
        return Ok(false);
    };
    if bucket.is_read_only() || bucket.sync_config()? == sync {
        return Ok(false);
    }
    bucket.set_sync_config(sync).await?;
    Ok(true)
}

impl PartialEq for Layer {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

/// What an app key may do in its buckets, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// An app key as stored: in the key file's `keys` or as
/// `[serve.keys.NAME]` (the secret is not in `Debug`).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub buckets: Vec<String>,
    pub access: Access,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("access_key_id", &self.access_key_id)
            .field("buckets", &self.buckets)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

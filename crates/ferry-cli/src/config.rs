//! `ferry.toml` (in the bucket directory) and the usual `AWS_*` variables:
//! the CLI's configuration, read here and handed to the library as values.
//!
//! Precedence for credentials: environment, then `ferry.toml`. Endpoint and
//! region: command-line flags, then what the bucket records, then
//! `AWS_ENDPOINT_URL` / `AWS_REGION`.

use std::path::Path;

use anyhow::Context;
use ferry::remote::spec::{Credentials, RemoteSpec};
use ferry::SyncConfig;

/// The file's shape.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub credentials: CredentialsSection,
    #[serde(default)]
    pub sync: Option<SyncConfig>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

/// Reads `<bucket>/ferry.toml` if it exists.
pub fn load(bucket_dir: &Path) -> anyhow::Result<FileConfig> {
    let path = bucket_dir.join("ferry.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Credentials from the environment, then the file.
pub fn credentials(file: &FileConfig) -> Credentials {
    Credentials {
        access_key_id: env("AWS_ACCESS_KEY_ID").or_else(|| file.credentials.access_key_id.clone()),
        secret_access_key: env("AWS_SECRET_ACCESS_KEY")
            .or_else(|| file.credentials.secret_access_key.clone()),
        session_token: env("AWS_SESSION_TOKEN").or_else(|| file.credentials.session_token.clone()),
    }
}

/// Fills endpoint and region from `AWS_ENDPOINT_URL` / `AWS_REGION` when the spec has none.
pub fn with_env_defaults(mut spec: RemoteSpec) -> RemoteSpec {
    if spec.endpoint.is_none() {
        spec.endpoint = env("AWS_ENDPOINT_URL");
    }
    if spec.region.is_none() {
        spec.region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    }
    spec
}

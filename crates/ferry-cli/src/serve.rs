//! `ferry serve`: the bucket (or every bucket under a directory) as a local
//! S3 endpoint, through `ferry-gateway`.

use std::path::Path;

use anyhow::Context as _;

use crate::args::{Global, ServeArgs, ServeCommand};
use crate::{access_keys, config, locate, syncing, CommandError};

/// The shortest bearer token accepted (a short one can be guessed).
const MIN_TOKEN: usize = 16;

/// The owner's access key pair.
struct Keys {
    access_key_id: String,
    secret_access_key: String,
}

/// The owner's access key pair: `FERRY_SERVE_ACCESS_KEY_ID` and
/// `FERRY_SERVE_SECRET_ACCESS_KEY`, else `[serve]` in the configuration
/// files, else the pair stored in `dir`'s key file (made, stored and
/// printed on the first `serve`). Returns it and whether it was just made.
fn keys(file: &config::FileConfig, dir: &Path) -> Result<(Keys, bool), CommandError> {
    let env = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (
        env("FERRY_SERVE_ACCESS_KEY_ID"),
        env("FERRY_SERVE_SECRET_ACCESS_KEY"),
    ) {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok((
                Keys {
                    access_key_id,
                    secret_access_key,
                },
                false,
            ))
        }
        (None, None) => {}
        _ => {
            return Err(CommandError::user(
                "only one of FERRY_SERVE_ACCESS_KEY_ID and FERRY_SERVE_SECRET_ACCESS_KEY is set",
                "set both, or neither (then ferry.toml's [serve], else a stored pair, is used)",
            ))
        }
    }
    if let Some((access_key_id, secret_access_key)) = file.serve_keys() {
        return Ok((
            Keys {
                access_key_id,
                secret_access_key,
            },
            false,
        ));
    }
    let path = dir.join(access_keys::KEY_FILE);
    let _lock = access_keys::lock(dir)?;
    let mut stored = access_keys::KeyFile::read(&path)?.unwrap_or_default();
    if let (Some(access_key_id), Some(secret_access_key)) =
        (&stored.access_key_id, &stored.secret_access_key)
    {
        return Ok((
            Keys {
                access_key_id: access_key_id.clone(),
                secret_access_key: secret_access_key.clone(),
            },
            false,
        ));
    }
    let (access_key_id, secret_access_key) = access_keys::random_pair()?;
    stored.access_key_id = Some(access_key_id.clone());
    stored.secret_access_key = Some(secret_access_key.clone());
    stored.write(&path)?;
    Ok((
        Keys {
            access_key_id,
            secret_access_key,
        },
        true,
    ))
}

/// An S3 bucket name from a directory name: lowercase, other characters
/// as `-`, at most 63 characters; a name of one or two letters and digits
/// is kept as it is (the gateway serves it under the name a user
/// guesses), an empty one is `bucket`.
fn bucket_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    name.truncate(63);
    name = name.trim_end_matches('-').to_owned();
    if name.is_empty() {
        name = "bucket".into();
    }
    name
}

pub async fn serve(global: &Global, args: ServeArgs) -> Result<(), CommandError> {
    if let Some(ServeCommand::Keys(k)) = &args.command {
        return access_keys::keys(global, k);
    }
    // Served buckets stay unlocked for as long as this runs: no core file
    // may carry their keys (before any is unlocked).
    crate::passphrase::disable_core_dumps();
    let (served, key_dir, file, bucket) = match &args.buckets {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let file = config::load_layers(None)?;
            (
                ferry_gateway::Served::Dir(dir.clone()),
                dir.clone(),
                file,
                None,
            )
        }
        None => {
            let bucket = locate::open(global).await?;
            let file = config::load(bucket.dir())?;
            // Lazy objects are fetched when the remote answers; offline,
            // everything local is still served.
            if bucket.remote_spec()?.is_some() {
                if let Err(e) = syncing::connect(global, &bucket).await {
                    eprintln!(
                        "warning: the remote cannot be reached ({}); serving what is stored locally",
                        e.message()
                    );
                }
            }
            let root = bucket.dir().parent().unwrap_or(bucket.dir()).to_owned();
            let name = match &args.name {
                Some(n) if ferry_gateway::store::valid_bucket_name(n) => n.clone(),
                Some(n) => {
                    return Err(CommandError::user(
                        format!("{n:?} is not a valid S3 bucket name"),
                        "use 3 to 63 characters of a-z, 0-9, `-` and `.`",
                    ))
                }
                None => bucket_name(&root),
            };
            (
                ferry_gateway::Served::One {
                    name,
                    bucket: bucket.clone(),
                },
                bucket.dir().to_owned(),
                file,
                Some(bucket),
            )
        }
    };
    let (keys, made) = keys(&file, &key_dir)?;
    let app_keys = access_keys::LiveKeys::new(&file, &key_dir, &keys.access_key_id)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &Path| {
                std::fs::read(p).map_err(|e| {
                    CommandError::user(
                        format!("reading {}: {e}", p.display()),
                        "give --tls-cert and --tls-key as PEM files",
                    )
                })
            };
            let (cert_pem, key_pem) = (read(cert)?, zeroize::Zeroizing::new(read(key)?));
            Some(
                ferry_gateway::Tls::from_pem(&cert_pem, &key_pem).map_err(|e| {
                    CommandError::user(
                        format!("--tls-cert {} / --tls-key: {e}", cert.display()),
                        "give the server's PEM certificate (chain) and its private key",
                    )
                })?,
            )
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            CommandError::user(
                format!("listening on {}: {e}", args.listen),
                "choose another address with --listen HOST:PORT",
            )
        })?;
    let app = match &args.signer_base {
        None => None,
        Some(base) => {
            let Some(b) = &bucket else {
                return Err(CommandError::user(
                    "--signer-base serves one bucket",
                    "serve one bucket (without --buckets) to sign URLs for it",
                ));
            };
            let section = file.serve_section();
            let tokens: Vec<ferry_gateway::app::Token> = section
                .map(|s| {
                    s.tokens
                        .values()
                        .map(|t| ferry_gateway::app::Token {
                            token: t.token.clone(),
                            prefixes: t.prefixes.clone(),
                            verbs: t.verbs.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if tokens.iter().any(|t| t.token.trim().len() < MIN_TOKEN) {
                return Err(CommandError::user(
                    format!(
                        "a bearer token in [serve.tokens] is shorter than {MIN_TOKEN} characters"
                    ),
                    "use a long random token, e.g. `openssl rand -hex 24`",
                ));
            }
            if tokens.is_empty() {
                return Err(CommandError::user(
                    "--signer-base needs at least one bearer token",
                    "add [serve.tokens.NAME] with token = \"...\" (and prefixes, verbs) to ferry.toml",
                ));
            }
            let target = if args.signer_target == "upstream" {
                if b.is_encrypted() {
                    return Err(CommandError::user(
                        "an encrypted bucket's remote holds ciphertext: URLs signed for it would upload plaintext beside it",
                        "use --signer-target local",
                    ));
                }
                let spec = b.remote_spec()?.ok_or_else(|| {
                    CommandError::user(
                        "--signer-target upstream needs a remote",
                        "set one with `ferry remote set s3://BUCKET/PREFIX`",
                    )
                })?;
                let spec = config::with_env_defaults(spec);
                let s3 = spec
                    .build_s3(&config::credentials(&file)?, b.sync_config()?.timeouts())
                    .map_err(ferry::Error::from)?
                    .ok_or_else(|| {
                        CommandError::user(
                            "--signer-target upstream signs S3 URLs only",
                            "use --signer-target local for other remotes",
                        )
                    })?;
                ferry_gateway::app::SignerTarget::Upstream(std::sync::Arc::new(s3))
            } else {
                ferry_gateway::app::SignerTarget::Local
            };
            Some(ferry_gateway::app::AppConfig {
                base: base.trim_end_matches('/').to_owned(),
                tokens,
                max_expiry: std::time::Duration::from_secs(
                    section
                        .and_then(|s| s.signer_max_expiry_secs)
                        .unwrap_or(900),
                ),
                target,
                public_url: format!(
                    "{scheme}://{}",
                    listener.local_addr().map_err(|e| anyhow::anyhow!("{e}"))?
                ),
            })
        }
    };
    let names = match &served {
        ferry_gateway::Served::One { name, .. } => name.clone(),
        ferry_gateway::Served::Dir(d) => format!("the buckets under {}", d.display()),
    };
    let gateway = ferry_gateway::start(
        listener,
        served,
        ferry_gateway::GatewayConfig {
            access_key_id: keys.access_key_id.clone(),
            secret_access_key: keys.secret_access_key.clone(),
            app_keys: Some(std::sync::Arc::new(app_keys)),
            anonymous_read: args.anonymous_read,
            public_read: args.public_read.clone(),
            cors_origins: args.cors_origin.clone(),
            cache_control: Some("no-cache".into()),
            app,
            limits: ferry_gateway::Limits::default(),
            uploads: ferry_gateway::UploadLimits {
                max_age: args.upload_max_age,
                max_bytes: args.upload_max_gib.saturating_mul(1 << 30),
            },
            allowed_hosts: args.allowed_host.clone(),
            tls,
        },
    )
    .map_err(|e| anyhow::anyhow!("starting the gateway: {e}"))?;
    if args.watch {
        match &bucket {
            Some(b) => b.start_sync().await?,
            None => {
                return Err(CommandError::user(
                    "--watch syncs one bucket",
                    "run `ferry watch` in each bucket, or serve one bucket",
                ))
            }
        }
    }
    if !global.quiet {
        eprintln!("serving {names} at {scheme}://{}", gateway.addr);
        eprintln!("access key id: {}", keys.access_key_id);
        if made {
            // Printed to a person only: a log (journald) keeps it.
            use std::io::IsTerminal as _;
            if std::io::stderr().is_terminal() {
                eprintln!(
                    "secret access key: {} (made now, stored in {})",
                    keys.secret_access_key,
                    key_dir.join(access_keys::KEY_FILE).display()
                );
            } else {
                eprintln!(
                    "secret access key: made now, stored in {}",
                    key_dir.join(access_keys::KEY_FILE).display()
                );
            }
        }
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    gateway.stop();
    if let (true, Some(b)) = (args.watch, &bucket) {
        b.stop_sync().await?;
    }
    Ok(())
}

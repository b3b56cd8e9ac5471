//! Live commands: watch (the background engine), pin/unpin, cache, destroy.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use serde_json::json;

use crate::args::{CacheArgs, CacheCommand, DestroyArgs, Global, KeysArgs, WatchArgs};
use crate::command_error::CommandError;
use crate::locate;
use crate::output::{human_size, rfc3339};
use crate::syncing::open_connected;

fn describe(event: &ferry::Event) -> String {
    use ferry::Event as E;
    match event {
        E::SyncStarted => "sync started".into(),
        E::SyncCompleted { result } => format!(
            "sync completed: pushed {}, pulled {}, {} conflict(s), {} error(s) in {} ms",
            result.pushed,
            result.pulled,
            result.conflicts.len(),
            result.errors.len(),
            result.duration_ms
        ),
        E::SyncFailed { error } => format!("sync failed: {error}"),
        E::ObjectPushed { key } => format!("pushed {key}"),
        E::ObjectPulled { key } => format!("pulled {key}"),
        E::ObjectConflict { key } => format!("conflict on {key}"),
        E::ObjectEvicted { key } => format!("evicted {key}"),
        E::Offline => "remote unreachable: working offline".into(),
        E::Online => "remote reachable again".into(),
        E::LeaderPromoted => "this process now runs the sync engine".into(),
        E::LeaderDemoted => "this process stopped running the sync engine".into(),
        E::Destroyed => "the bucket was destroyed (`ferry destroy`): stopping".into(),
        other => format!("{other:?}"),
    }
}

fn print_event(event: &ferry::Event, as_json: bool) -> Result<(), CommandError> {
    let now = std::time::SystemTime::now();
    let line = if as_json {
        let mut v = serde_json::to_value(event).context("encoding an event")?;
        if let Some(o) = v.as_object_mut() {
            o.insert("time".into(), json!(rfc3339(now)));
        }
        v.to_string()
    } else {
        format!("{}  {}", rfc3339(now), describe(event))
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("writing output")?;
    Ok(())
}

pub async fn watch(global: &Global, args: WatchArgs) -> Result<(), CommandError> {
    // A long-running process holding keys: no core file may carry them.
    crate::passphrase::disable_core_dumps();
    let bucket = open_connected(global).await?;
    // --quiet: no event lines (errors still go to stderr); --json is asked
    // for explicitly and always prints.
    let silent = global.quiet && !args.json;
    let mut events = bucket.subscribe();
    bucket.start_sync().await?;
    if !global.quiet && !args.json {
        if let Some(pid) = bucket.leader_pid().filter(|p| *p != std::process::id()) {
            eprintln!("process {pid} runs the sync engine; waiting to take over if it stops");
        }
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    // Edits to the configuration files reach the running engine.
    let mut files = ConfigWatch::new(bucket.dir());
    let mut poll = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = poll.tick() => files.reapply(&bucket).await,
            received = events.recv() => match received {
                Ok(ferry::Event::Destroyed) => {
                    if !silent {
                        print_event(&ferry::Event::Destroyed, args.json)?;
                    }
                    break;
                }
                Ok(e) if !silent => print_event(&e, args.json)?,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("warning: {n} events were dropped (output too slow)");
                }
                Err(_) => break,
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    // Finish cleanly: the run in progress completes, leadership is released.
    bucket.stop_sync().await?;
    while let Ok(e) = events.try_recv() {
        if !silent {
            print_event(&e, args.json)?;
        }
    }
    Ok(())
}

/// The configuration files' modification times, polled by `watch`.
struct ConfigWatch {
    dir: std::path::PathBuf,
    seen: Vec<Option<std::time::SystemTime>>,
}

impl ConfigWatch {
    fn paths(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        // Both places a bucket's file may be (`config::bucket_file`).
        let mut paths = vec![dir.join("ferry.toml")];
        if dir.file_name() == Some(std::ffi::OsStr::new(crate::locate::DEFAULT_DIR)) {
            paths.extend(dir.parent().map(|p| p.join("ferry.toml")));
        }
        paths.extend(crate::config::user_config_path());
        paths
    }

    fn stamps(dir: &std::path::Path) -> Vec<Option<std::time::SystemTime>> {
        Self::paths(dir)
            .iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    fn new(dir: &std::path::Path) -> Self {
        ConfigWatch {
            dir: dir.to_owned(),
            seen: Self::stamps(dir),
        }
    }

    /// Applies the files again when one changed; a file that does not
    /// parse is reported and the settings in force stay.
    async fn reapply(&mut self, bucket: &ferry::Bucket) {
        let now = Self::stamps(&self.dir);
        if now == self.seen {
            return;
        }
        self.seen = now;
        match crate::config::load(&self.dir) {
            Ok(file) => match crate::config::apply(bucket, &file).await {
                Ok(true) => eprintln!("settings changed: applied to the running engine"),
                Ok(false) => {}
                Err(e) => eprintln!("warning: applying the new settings: {e}"),
            },
            Err(e) => eprintln!("warning: the settings in force stay: {e:#}"),
        }
    }
}

pub async fn pin(global: &Global, args: KeysArgs, pinned: bool) -> Result<(), CommandError> {
    if !args.recursive {
        for key in &args.keys {
            ferry::validate_key(key).map_err(ferry::Error::from)?;
        }
    }
    let bucket = locate::open_locked(global).await?;
    let mut named = Vec::new();
    if args.recursive {
        for folder in &args.keys {
            let under = crate::objects::folder(folder, args.prefix);
            let found = bucket.list_all(&under).await?;
            if found.is_empty() {
                return Err(CommandError::user(
                    format!("no objects under {under:?}"),
                    "`ferry ls` lists the keys this bucket holds",
                ));
            }
            named.extend(found.into_iter().map(|m| m.key));
        }
    } else {
        named = args.keys.clone();
    }
    let keys: Vec<&str> = named.iter().map(String::as_str).collect();
    let found = if pinned {
        bucket.pin(&keys).await?
    } else {
        bucket.unpin(&keys).await?
    };
    if found < keys.len() {
        return Err(CommandError::user(
            format!("{} of {} keys do not exist", keys.len() - found, keys.len()),
            "`ferry ls` lists the keys this bucket holds",
        ));
    }
    if !global.quiet {
        eprintln!(
            "{} {found} object(s)",
            if pinned { "pinned" } else { "unpinned" }
        );
    }
    Ok(())
}

/// Parses `10MiB`, `1.5GiB`, `500KB`, `4096`.
pub fn parse_size(text: &str) -> Result<u64, CommandError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| CommandError::usage(format!("{text:?} is not a size (try 10MiB or 500KB)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(CommandError::usage(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            )))
        }
    };
    Ok((value * mult).round() as u64)
}

pub async fn cache(global: &Global, args: CacheArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    match args.command.unwrap_or(CacheCommand::Usage) {
        CacheCommand::Usage => {
            let u = bucket.cache_usage().await?;
            if args.json {
                out!(
                    "{}",
                    json!({"used": u.used, "limit": u.limit, "percent": u.percent})
                );
            } else {
                out!(
                    "{} of {} used ({:.1}%)",
                    human_size(u.used),
                    human_size(u.limit),
                    u.percent
                );
            }
        }
        CacheCommand::Evict { size } => {
            let want = parse_size(&size)?;
            let freed = bucket.evict(want).await?;
            if args.json {
                out!("{}", json!({"requested": want, "freed": freed}));
            } else {
                out!(
                    "freed {} of the {} asked for",
                    human_size(freed),
                    human_size(want)
                );
            }
        }
    }
    Ok(())
}

pub async fn destroy(global: &Global, args: DestroyArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let dir = bucket.dir().to_owned();
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CommandError::usage("`ferry destroy` asks for confirmation on a terminal; pass --yes to run it unattended"));
        }
        let what = if args.clear_local {
            "stop syncing and DELETE all local data in"
        } else {
            "stop syncing"
        };
        eprint!("This will {what} {}. Continue? [y/N] ", dir.display());
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CommandError::user("not destroyed", "nothing was changed"));
        }
    }
    bucket.destroy(args.clear_local).await?;
    if !global.quiet {
        eprintln!(
            "destroyed {}{}",
            dir.display(),
            if args.clear_local {
                " (local data deleted)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

pub async fn passwd(global: &Global, args: crate::args::PasswdArgs) -> Result<(), CommandError> {
    // A cost no device could unlock with is refused before anything.
    let kdf = args.kdf.params()?;
    let dir = locate::bucket_dir(global)?;
    let bucket = ferry::Bucket::open(&dir).await?;
    if !bucket.is_encrypted() {
        return Err(ferry::Error::NotEncrypted.into());
    }
    let old = crate::passphrase::existing(global)?;
    bucket.unlock(old.as_bytes()).await?;
    // The remote's copy of the key changes too, so a remote must be reachable.
    if bucket.remote_spec()?.is_some() {
        let file = crate::config::load(&dir)?;
        let spec = crate::config::with_env_defaults(bucket.remote_spec()?.unwrap_or_default());
        let remote = spec
            .build(&crate::config::credentials(&file)?)
            .map_err(ferry::Error::from)?;
        bucket.attach(remote).await?;
    }
    let new = crate::passphrase::new(global, args.new_passphrase_file.as_deref(), false)?;
    bucket
        .change_passphrase(old.as_bytes(), new.as_bytes(), kdf)
        .await?;
    if !global.quiet {
        eprintln!("passphrase changed (the key was re-wrapped; no data was rewritten)");
    }
    Ok(())
}

pub async fn rekey(global: &Global, args: crate::args::RekeyArgs) -> Result<(), CommandError> {
    let kdf = args.kdf.params()?;
    let dir = locate::bucket_dir(global)?;
    let bucket = ferry::Bucket::open(&dir).await?;
    if !bucket.is_encrypted() {
        return Err(ferry::Error::NotEncrypted.into());
    }
    let Some(spec) = bucket.remote_spec()? else {
        return Err(CommandError::user(
            "rekey re-seals the bucket and its remote, and this bucket has no remote",
            "a bucket without a remote: make a new encrypted bucket and `ferry cp -r` the data into it",
        ));
    };
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(CommandError::usage("`ferry rekey` asks for confirmation on a terminal; pass --yes to run it unattended"));
        }
        if !crate::passphrase::confirm(&format!(
            "rekey {}: re-seal and re-push every object under a new key (other devices must join again)?",
            dir.display()
        ))? {
            return Err(CommandError::user("not rekeyed", "nothing was changed"));
        }
    }
    let passphrase = crate::passphrase::existing(global)?;
    bucket.unlock(passphrase.as_bytes()).await?;
    // A rekey answers a leaked passphrase: the new key gets a new one.
    let new = crate::passphrase::new(global, args.new_passphrase_file.as_deref(), false)?;
    if *new == *passphrase {
        return Err(CommandError::user(
            "the new passphrase is the current one",
            "a rekey answers a leaked passphrase: give a new one (FERRY_NEW_PASSPHRASE, --new-passphrase-file, or at the prompt); nothing was changed",
        ));
    }
    let file = crate::config::load(&dir)?;
    let spec = crate::config::with_env_defaults(spec);
    let remote = spec
        .build(&crate::config::credentials(&file)?)
        .map_err(ferry::Error::from)?;
    let bar = crate::output::object_bar(global.quiet || args.json);
    let shown = bar.clone();
    let progress: ferry::RekeyProgressFn =
        std::sync::Arc::new(move |step: ferry::RekeyStep, done, total| {
            shown.set_message(match step {
                ferry::RekeyStep::Copy => "re-sealing",
                ferry::RekeyStep::Push => "pushing",
                ferry::RekeyStep::Retire => "deleting old objects",
            });
            shown.set_length(total);
            shown.set_position(done);
        });
    let result = bucket
        .rekey(
            remote,
            passphrase.as_bytes(),
            new.as_bytes(),
            kdf,
            Some(progress),
        )
        .await;
    bar.finish_and_clear();
    let (_bucket, report) = result?;
    if args.json {
        out!(
            "{}",
            json!({
                "epoch": report.epoch,
                "key_id": report.key_id,
                "copied": report.copied,
                "pushed": report.pushed,
                "retired": report.retired,
                "resumed": report.resumed,
                "left": report.left,
                "kept": report.kept,
            })
        );
    } else if !global.quiet {
        eprintln!(
            "rekeyed {}: key epoch {} (key id {}), {} object(s) re-sealed, {} pushed, {} old remote object(s) deleted{}",
            dir.display(),
            report.epoch,
            report.key_id,
            report.copied,
            report.pushed,
            report.retired,
            if report.resumed { " (an interrupted rekey was resumed)" } else { "" }
        );
        for key in &report.left {
            eprintln!("left under the old key (not in this bucket): {key}");
        }
        for key in &report.kept {
            eprintln!(
                "kept under the old key (written by a device on the old key during the rekey): {key}"
            );
        }
        eprintln!(
            "other devices must join the remote again, with the NEW passphrase: `ferry rejoin` in their bucket (or ferry init --remote URL in a new folder; the old passphrase no longer opens it)"
        );
    }
    Ok(())
}

pub async fn rejoin(global: &Global, args: crate::args::RejoinArgs) -> Result<(), CommandError> {
    let afford = args.kdf.params()?;
    let dir = locate::bucket_dir(global)?;
    let bucket = ferry::Bucket::open(&dir).await?;
    if !bucket.is_encrypted() {
        return Err(ferry::Error::NotEncrypted.into());
    }
    let Some(spec) = bucket.remote_spec()? else {
        return Err(CommandError::user(
            "rejoin joins this bucket's remote again, and this bucket has no remote",
            "`ferry remote set URL` first",
        ));
    };
    let passphrase = crate::passphrase::existing(global)?;
    bucket.unlock(passphrase.as_bytes()).await?;
    let new = crate::passphrase::rekeyed(args.new_passphrase_file.as_deref())?;
    let file = crate::config::load(&dir)?;
    let spec = crate::config::with_env_defaults(spec);
    let remote = spec
        .build(&crate::config::credentials(&file)?)
        .map_err(ferry::Error::from)?;
    let (_bucket, report) = bucket.rejoin(remote, new.as_bytes(), afford).await?;
    if args.json {
        out!(
            "{}",
            json!({
                "epoch": report.epoch,
                "pulled": report.pulled,
                "carried": report.carried,
                "conflict_copies": report.copies.iter().map(|(k, c)| json!({"key": k, "copy": c})).collect::<Vec<_>>(),
                "deleted": report.deleted,
                "dropped_deletes": report.dropped_deletes,
                "retired": report.retired,
                "not_carried": report.not_carried,
                "unpushed": report.unpushed,
                "resumed": report.resumed,
            })
        );
    } else if !global.quiet {
        eprintln!(
            "rejoined {} under key epoch {}: {} object(s) pulled, {} change(s) carried over, {} delete(s) carried, {} conflict cop(ies){}",
            dir.display(),
            report.epoch,
            report.pulled,
            report.carried.len(),
            report.deleted.len(),
            report.copies.len(),
            if report.resumed { " (an interrupted rejoin was resumed)" } else { "" }
        );
        for (key, copy) in &report.copies {
            eprintln!("kept beside the remote's newer version: {key} → {copy}");
        }
        for key in &report.dropped_deletes {
            eprintln!("not deleted (changed on the remote since this device deleted it): {key}");
        }
        for key in &report.not_carried {
            eprintln!("not carried (its content is not on this device; the remote keeps it under the old key): {key}");
        }
        if report.unpushed > 0 {
            eprintln!(
                "{} change(s) wait for the next `ferry sync`",
                report.unpushed
            );
        }
    }
    Ok(())
}

pub async fn config(global: &Global, args: crate::args::ConfigArgs) -> Result<(), CommandError> {
    let crate::args::ConfigCommand::Show { json } = args.command;
    // Outside a bucket: the user-level settings alone.
    let dir = locate::bucket_dir(global).ok();
    let file = crate::config::load_layers(dir.as_deref())?;
    let bucket = match &dir {
        Some(d) => Some(ferry::Bucket::open(d).await?),
        None => None,
    };
    if let Some(b) = &bucket {
        crate::config::apply(b, &file).await?;
    }
    let rows = file.show(bucket.as_ref())?;
    let bucket_file = match &dir {
        Some(d) => Some(crate::config::bucket_file(d)?),
        None => None,
    };
    if json {
        let settings: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, value, source)| {
                (
                    name.clone(),
                    json!({"value": value, "source": source.to_string()}),
                )
            })
            .collect();
        let v = json!({
            "bucket": dir.as_ref().map(|d| d.display().to_string()),
            "user_config": file.user_path.as_ref().map(|p| p.display().to_string()),
            "bucket_config": bucket_file.as_ref().map(|p| p.display().to_string()),
            "settings": settings,
        });
        out!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        );
        return Ok(());
    }
    match &dir {
        Some(d) => out!("bucket:      {}", d.display()),
        None => out!("bucket:      (none here: user-level settings only)"),
    }
    if let Some(p) = &file.user_path {
        let state = if p.is_file() { "" } else { " (not present)" };
        out!("user config: {}{state}", p.display());
    }
    if let Some(p) = &bucket_file {
        let state = if p.is_file() {
            ""
        } else {
            " (not present; it may also go beside the .ferry folder)"
        };
        out!("bucket config: {}{state}", p.display());
    }
    let width = rows.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
    let vwidth = rows
        .iter()
        .map(|(_, v, _)| v.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for (name, value, source) in rows {
        out!("{name:<width$}  {value:<vwidth$}  ({source})");
    }
    Ok(())
}

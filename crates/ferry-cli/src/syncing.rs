//! Sync commands: remote, sync/push/pull, status, conflicts, resolve, scope.

use anyhow::Context;
use ferry::remote::spec::RemoteSpec;
use ferry::{Bucket, Resolution, SyncMode, SyncOptions, SyncReport};
use serde_json::json;

use crate::args::{
    ConflictsArgs, Global, RemoteArgs, RemoteCommand, ResolveArgs, ScopeArgs, ScopeCommand,
    StatusArgs, SyncArgs,
};
use crate::command_error::CommandError;
use crate::config;
use crate::locate;
use crate::output::{human_size, rfc3339};

/// Opens the bucket, applies `ferry.toml`'s sync settings, and connects its remote.
pub async fn open_connected(global: &Global) -> Result<Bucket, CommandError> {
    let bucket = locate::open_configured(global).await?;
    connect(global, &bucket).await?;
    Ok(bucket)
}

/// Connects the remote of an open bucket when one of `keys` has its content
/// only there (evicted, or learned by a lazy pull), so reading it fetches it.
pub async fn connect_for_reading<'a>(
    global: &Global,
    bucket: &Bucket,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), CommandError> {
    let missing = keys
        .into_iter()
        .find(|k| matches!(bucket.residency(k), Ok(r) if !r.cached));
    let Some(key) = missing else {
        return Ok(());
    };
    connect(global, bucket).await.map_err(|e| {
        CommandError::user(
            format!(
                "the content of {key:?} is not on this device, and the remote cannot be reached: {}",
                e.message()
            ),
            "run the command again when the remote answers; `ferry pin KEY` keeps an object on this device",
        )
    })
}

/// Connects the remote of an open bucket (unlocking it with the remote's
/// key file where needed).
pub async fn connect(global: &Global, bucket: &Bucket) -> Result<(), CommandError> {
    let dir = bucket.dir().to_owned();
    let file = config::load(&dir)?;
    let Some(spec) = bucket.remote_spec()? else {
        return Err(CommandError::user(
            "this bucket has no remote",
            "set one with `ferry remote set s3://BUCKET/PREFIX` (or gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX, webdav://HOST/PATH, signer+https://HOST/BASE, file:///PATH)",
        ));
    };
    let spec = config::with_env_defaults(spec);
    // The files' settings are in the index already (`locate::open_configured`
    // applied them when the bucket was opened).
    let timeouts = bucket.sync_config()?.timeouts();
    let remote = spec
        .build_with(&config::credentials(&file)?, timeouts)
        .map_err(ferry::Error::from)?;
    let passphrase = match bucket.is_locked() {
        true => Some(crate::passphrase::existing(global)?),
        false => None,
    };
    bucket
        .connect_remote(remote, passphrase.as_ref().map(|p| p.as_bytes()))
        .await?;
    Ok(())
}

/// Checks a remote before anything is written locally (`init --remote`,
/// `remote set`): what it holds, encrypted, plaintext or empty. A missing
/// base folder (a WebDAV collection) is made first, and the person told.
pub async fn check_spec(
    global: &Global,
    spec: &RemoteSpec,
    dir: &std::path::Path,
) -> Result<
    (
        ferry::remote::SharedRemote,
        ferry::remote::encrypted::RemoteMode,
    ),
    CommandError,
> {
    let file = config::load(dir).unwrap_or_default();
    let spec = config::with_env_defaults(spec.clone());
    let sync = file.sync.unwrap_or_default();
    let remote = spec
        .build_with(&config::credentials(&file)?, sync.timeouts())
        .map_err(ferry::Error::from)?;
    // One retry: a store that accepts connections and never answers costs
    // the no-progress timeout twice, then a clear error.
    if ferry::create_remote_base(remote.clone(), sync.max_retries.min(1)).await? && !global.quiet {
        eprintln!(
            "Created the folder {} on the server (it was not there).",
            spec.url
        );
    }
    let mode = ferry::check_remote(remote.clone(), sync.max_retries.min(1)).await?;
    Ok((remote, mode))
}

pub fn spec_from(
    url: &str,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: bool,
    insecure: bool,
) -> Result<RemoteSpec, CommandError> {
    if url.trim() != url {
        return Err(CommandError::usage(format!(
            "the remote URL {url:?} starts or ends with whitespace; remove it (a folder named \
             with a trailing space is almost never meant)"
        )));
    }
    let spec = RemoteSpec {
        url: url.to_owned(),
        endpoint,
        region,
        path_style,
        insecure,
    };
    if spec.kind().map_err(|e| CommandError::usage(e.detail))?
        == ferry::remote::spec::RemoteKind::Memory
    {
        return Err(CommandError::usage(
            "memory:// lives inside one process: the next `ferry` command would see it empty and \
             its sync would delete everything. Use file:///PATH or s3://BUCKET/PREFIX \
             (memory:// is for the library and tests)",
        ));
    }
    Ok(spec)
}

pub async fn remote(global: &Global, args: RemoteArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    match args.command {
        RemoteCommand::Show { json } => {
            let spec = bucket.remote_spec()?;
            // The effective endpoint (environment defaults filled in) and
            // what the probe found for it; building makes no request.
            let effective = spec.clone().map(config::with_env_defaults);
            let probe = match &effective {
                Some(s) => match s.build(&Default::default()) {
                    Ok(remote) => bucket.probe_result(&remote.endpoint())?,
                    Err(_) => None,
                },
                None => None,
            };
            if json {
                let mut v = serde_json::to_value(&spec).context("encoding JSON")?;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert(
                        "effective_endpoint".into(),
                        json!(effective.as_ref().and_then(|s| s.endpoint.clone())),
                    );
                    obj.insert(
                        "probe".into(),
                        json!(probe.map(|p| json!({
                            "conditional_put": p.conditional_put,
                            "conditional_delete": p.conditional_delete,
                            "conditional_multipart": p.conditional_multipart,
                            "metadata_place": p.metadata_place,
                        }))),
                    );
                }
                out!(
                    "{}",
                    serde_json::to_string_pretty(&v).context("encoding JSON")?
                );
            } else if let Some(s) = spec {
                out!("url:        {}", s.url);
                let from_env = effective
                    .as_ref()
                    .and_then(|e| e.endpoint.clone())
                    .filter(|_| s.endpoint.is_none());
                match (&s.endpoint, from_env) {
                    (Some(e), _) => out!("endpoint:   {e}"),
                    (None, Some(e)) => out!("endpoint:   {e} (from the environment)"),
                    (None, None) => out!("endpoint:   (default)"),
                }
                // Region and addressing style are S3's alone.
                if s.url.starts_with("s3://") {
                    out!("region:     {}", s.region.as_deref().unwrap_or("(default)"));
                    out!("path style: {}", s.path_style);
                }
                if s.insecure {
                    out!("insecure:   plain HTTP accepted at a host that is not this machine");
                }
                let enforced = |yes: bool| {
                    if yes {
                        "enforced by the store"
                    } else {
                        "not enforced: checked by a HEAD just before (a narrow race)"
                    }
                };
                match probe {
                    Some(p) => {
                        out!("conditional writes:  {}", enforced(p.conditional_put));
                        out!("conditional deletes: {}", enforced(p.conditional_delete));
                        if let Some(m) = p.conditional_multipart.filter(|m| *m != p.conditional_put)
                        {
                            out!("conditional multipart completions: {}", enforced(m));
                        }
                        use ferry::remote::MetadataPlace as M;
                        match p.metadata_place {
                            Some(M::DeadProperty) => {
                                out!("object metadata:     in a WebDAV dead property on each file")
                            }
                            Some(M::Sidecar) => out!(
                                "object metadata:     in a sidecar per key under .ferry/meta/ (the server stores no dead properties)"
                            ),
                            Some(M::Native) | None => {}
                        }
                    }
                    None => out!("conditional writes:  not probed yet (the next sync probes)"),
                }
            } else {
                out!("no remote (set one with `ferry remote set URL`)");
            }
        }
        RemoteCommand::Set {
            url,
            endpoint,
            region,
            path_style,
            insecure,
            yes,
            plaintext,
        } => {
            let spec = spec_from(&url, endpoint, region, path_style, insecure)?;
            if let Some(old) = bucket.remote_spec()? {
                if !old.same_location(&spec) && !yes {
                    let status = bucket.status().await?;
                    let what = format!(
                        "this bucket syncs with {}; switching to {url} forgets what was agreed with it: \
                         the {} synced object(s) are compared afresh with the new remote, and {} local \
                         delete(s) not yet pushed are dropped",
                        old.url, status.synced, status.pending_delete
                    );
                    if !crate::passphrase::confirm(&format!("{what}. Go on?"))? {
                        return Err(CommandError::user(
                            what,
                            "pass --yes to switch anyway (or keep the current remote)",
                        ));
                    }
                }
            }
            let (remote, mode) = check_spec(global, &spec, bucket.dir()).await?;
            bucket
                .switch_remote(spec, remote.as_ref(), &mode, plaintext)
                .await?;
            if !global.quiet {
                eprintln!("remote set to {url}");
            }
        }
    }
    Ok(())
}

/// Whether a planned action is worth showing: remembering a listing time
/// (`refresh`, which a full listing plans for versions first seen there)
/// changes nothing on either side.
fn shown(a: &ferry::plan::Action) -> bool {
    !matches!(a, ferry::plan::Action::Refresh { .. })
}

pub fn report_json(r: &SyncReport) -> serde_json::Value {
    json!({
        "pushed": r.pushed,
        "pulled": r.pulled,
        "deleted_remote": r.deleted_remote,
        "deleted_local": r.deleted_local,
        "conflicts": r.conflicts.iter().map(|c| json!({
            "key": c.key,
            "reason": c.reason.map(|x| x.describe()),
        })).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|e| json!({"key": e.key, "cause": e.cause, "retryable": e.retryable})).collect::<Vec<_>>(),
        "missing_on_remote": r.missing_on_remote,
        "parked": r.parked,
        "full": r.full,
        "planned": r.planned.iter().filter(|a| shown(a)).map(|a| json!({
            "action": a.verb(),
            "key": a.key(),
            "text": a.to_string(),
        })).collect::<Vec<_>>(),
        "duration_ms": r.duration.as_millis() as u64,
        "timestamp": r.timestamp.map(rfc3339),
    })
}

pub async fn sync(global: &Global, args: SyncArgs, mode: SyncMode) -> Result<(), CommandError> {
    let filter = args.filter.build()?.map(std::sync::Arc::new);
    let bucket = open_connected(global).await?;
    let verb = match mode {
        SyncMode::Both => "syncing",
        SyncMode::Push => "pushing",
        SyncMode::Pull => "pulling",
    };
    let bar = std::sync::Arc::new(crate::output::SyncBar::new(verb, global.quiet || args.json));
    // Nobody sees a hidden bar (`--json`, `-q`, stderr not a terminal):
    // the run then neither looks up sizes nor counts bytes.
    let progress = (!bar.is_hidden()).then(|| {
        let shown = bar.clone();
        std::sync::Arc::new(move |p: ferry::SyncProgress| shown.update(p)) as ferry::ProgressFn
    });
    let opts = SyncOptions {
        mode,
        dry_run: args.dry_run,
        force: args.force,
        restore_remote: args.restore_remote,
        accept_remote_deletes: args.accept_remote_deletes,
        retry: args.retry,
        max_delete: args.max_delete,
        full: args.full,
        // A person asking for a sync expects to see the store as it is.
        full_if_cheap: true,
        filter,
    };
    if args.accept_remote_deletes && !args.dry_run && !args.yes {
        confirm_remote_deletes(&bucket, &opts).await?;
    }
    let report = bucket.sync_with_progress(opts, progress).await;
    bar.finish();
    let report = report?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report)).context("encoding JSON")?
        );
    } else if !global.quiet
        || !report.errors.is_empty()
        || !report.conflicts.is_empty()
        || !report.missing_on_remote.is_empty()
    {
        print_summary(&report, args.dry_run)?;
    }
    if report.errors.is_empty() && (report.conflicts.is_empty() || args.dry_run) {
        Ok(())
    } else if report.errors.is_empty() {
        // Everything else synced; what is left needs a person.
        Err(CommandError::exit_quietly(
            crate::command_error::EXIT_CONFLICTS,
        ))
    } else {
        let hint = if report.errors.iter().all(|e| !e.retryable) {
            "each failure is listed above; these keys are parked until they change, \
             or until `ferry sync --retry`"
        } else {
            "each failure is listed above; the next sync retries them (after a growing delay), \
             `ferry sync --retry` retries them now"
        };
        Err(CommandError::user(
            format!("{} object(s) could not be synced", report.errors.len()),
            hint,
        ))
    }
}

/// `--accept-remote-deletes`: plans the run first, says how many local
/// objects it deletes, and asks (refuses where nobody can answer).
async fn confirm_remote_deletes(bucket: &Bucket, opts: &SyncOptions) -> Result<(), CommandError> {
    let plan = bucket
        .sync(SyncOptions {
            dry_run: true,
            ..opts.clone()
        })
        .await?;
    let count = plan
        .planned
        .iter()
        .filter(|a| matches!(a, ferry::plan::Action::DeleteLocal { .. }))
        .count();
    if count == 0 {
        return Ok(());
    }
    let what = format!(
        "accepting the remote's deletes deletes {count} object(s) on this device (the remote no \
         longer holds them)"
    );
    if crate::passphrase::confirm(&format!("{what}. Go on?"))? {
        return Ok(());
    }
    Err(CommandError::user(
        format!("{what}; nothing was changed"),
        "pass --yes to delete them without asking; to put them back on the remote instead, run \
         `ferry sync --restore-remote`",
    ))
}

fn print_summary(r: &SyncReport, dry_run: bool) -> Result<(), CommandError> {
    if dry_run {
        out!(
            "dry run: {} action(s) planned, nothing changed",
            r.planned.iter().filter(|a| shown(a)).count()
        );
        for a in r.planned.iter().filter(|a| shown(a)) {
            out!("  {a}");
        }
        return Ok(());
    }
    out!(
        "pushed {}, pulled {}, deleted {} remote and {} local, {} conflict(s), {} error(s) in {:.1}s",
        r.pushed,
        r.pulled,
        r.deleted_remote,
        r.deleted_local,
        r.conflicts.len(),
        r.errors.len(),
        r.duration.as_secs_f64()
    );
    for c in &r.conflicts {
        out!(
            "  conflict: {} ({})",
            c.key,
            c.reason.map(|x| x.describe()).unwrap_or("unknown")
        );
    }
    if !r.conflicts.is_empty() {
        out!("  settle each with `ferry resolve KEY keep-local|keep-remote|keep-both`");
    }
    if let Some(first) = r.missing_on_remote.first() {
        let keys = match r.missing_on_remote.len() {
            1 => first.clone(),
            n => format!("{n} keys ({first}, ...)"),
        };
        eprintln!(
            "  warning: {keys}: missing on the remote, and no delete record sealed by this \
             bucket's key proves a device deleted it: kept here and pushed again"
        );
    }
    // One line per cause: many keys failing the same way read as one.
    for (cause, keys) in failures_by_cause(&r.errors) {
        let first = keys.first().map(String::as_str).unwrap_or_default();
        match keys.len() {
            1 if first.is_empty() => eprintln!("  error: {cause}"),
            1 => eprintln!("  error: {first}: {cause}"),
            n => eprintln!("  error: {n} keys ({first}, ...): {cause}"),
        }
    }
    if r.parked > 0 {
        out!(
            "  {} key(s) not pushed: their last failure is parked (`ferry status` lists them; \
             `ferry sync --retry` tries now)",
            r.parked
        );
    }
    Ok(())
}

/// Failures grouped by cause (the key replaced by `KEY` in each cause, so
/// a store that went down reads as one cause, not one line per key), the
/// most frequent first: (cause, keys).
fn failures_by_cause(failures: &[ferry::SyncIssue]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for f in failures {
        let cause = if f.key.is_empty() {
            f.cause.clone()
        } else {
            f.cause
                .replace(&format!("{:?}", f.key), "KEY")
                .replace(&f.key, "KEY")
        };
        match groups.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, keys)) => keys.push(f.key.clone()),
            None => groups.push((cause, vec![f.key.clone()])),
        }
    }
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    groups
}

pub async fn status(global: &Global, args: StatusArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let s = bucket.status().await?;
    let failures = bucket.failures().await?;
    let by_cause = failures_by_cause(&failures);
    if args.json {
        let v = json!({
            "total": s.total, "synced": s.synced, "dirty": s.dirty, "stale": s.stale,
            "conflicts": s.conflicts, "pending_delete": s.pending_delete, "orphan": s.orphan,
            "cache_size": s.cache_size, "failed": s.failed,
            "missing_on_remote": s.missing_on_remote, "remote": s.remote,
            "leader": s.leader, "leader_pid": s.leader_pid,
            "encrypted": s.encrypted, "locked": s.locked,
            "last_full_listing": s.last_full_listing.map(rfc3339),
            "failures": by_cause.iter().map(|(cause, keys)| json!({
                "cause": cause, "count": keys.len(), "keys": keys,
            })).collect::<Vec<_>>(),
        });
        out!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        );
    } else {
        out!(
            "remote:         {}",
            s.remote.as_deref().unwrap_or("(none)")
        );
        out!(
            "encryption:     {}",
            match (s.encrypted, s.locked) {
                (false, _) => "none",
                (true, true) => "end to end (locked)",
                (true, false) => "end to end (unlocked)",
            }
        );
        out!("objects:        {}", s.total);
        out!("synced:         {}", s.synced);
        out!("dirty:          {}", s.dirty);
        out!("stale:          {}", s.stale);
        out!("conflicts:      {}", s.conflicts);
        out!("pending delete: {}", s.pending_delete);
        out!("orphan:         {}", s.orphan);
        out!("failed pushes:  {}", s.failed);
        if s.missing_on_remote > 0 {
            // Deleted on the remote by someone holding its credentials but
            // not the key (or lost): kept here, pushed again.
            out!("missing on remote (pushed again): {}", s.missing_on_remote);
            if global.verbose > 0 {
                for k in bucket.missing_on_remote()? {
                    out!("    {k}");
                }
            }
        }
        out!("cache size:     {}", human_size(s.cache_size));
        match s.last_full_listing {
            Some(t) => out!(
                "full listing:   {} (writes by other tools show up at the next one; `ferry sync --full` lists now)",
                rfc3339(t)
            ),
            None => out!("full listing:   never (the next sync lists the remote in full)"),
        }
        match s.leader_pid {
            Some(pid) => out!("sync engine:    run by process {pid}"),
            None => out!("sync engine:    not running (start one with `ferry watch`)"),
        }
        // One line per cause; the keys with --verbose (or --json).
        for (cause, keys) in &by_cause {
            let first = keys.first().map(String::as_str).unwrap_or_default();
            match keys.len() {
                1 => out!("  failed: {first}: {cause}"),
                n => out!("  failed: {n} keys ({first}, ...): {cause}"),
            }
            if global.verbose > 0 && keys.len() > 1 {
                for k in keys {
                    out!("    {k}");
                }
            }
        }
        if global.verbose == 0 && by_cause.iter().any(|(_, k)| k.len() > 1) {
            out!("  (`ferry status --verbose` or `--json` lists every key)");
        }
    }
    Ok(())
}

pub async fn conflicts(global: &Global, args: ConflictsArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let list = bucket.conflicts().await?;
    if args.json {
        let v: Vec<_> = list
            .iter()
            .map(|c| json!({"key": c.key, "reason": c.reason.map(|x| x.describe()), "deleted_locally": c.deleted_locally, "remote_etag": c.remote_etag}))
            .collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        );
    } else {
        for c in &list {
            out!(
                "{}\t{}",
                c.key,
                c.reason.map(|x| x.describe()).unwrap_or("conflict")
            );
        }
    }
    Ok(())
}

pub async fn resolve(global: &Global, args: ResolveArgs) -> Result<(), CommandError> {
    let how = match args.resolution.as_str() {
        "keep-local" => Resolution::KeepLocal,
        "keep-remote" => Resolution::KeepRemote,
        "keep-both" => Resolution::KeepBoth,
        other => {
            return Err(CommandError::usage(format!(
                "unknown resolution {other:?}: use keep-local, keep-remote or keep-both"
            )))
        }
    };
    ferry::validate_key(&args.key).map_err(ferry::Error::from)?;
    let bucket = open_connected(global).await?;
    let out = bucket.resolve(&args.key, how).await?;
    if !global.quiet {
        match out.renamed_to {
            Some(copy) => eprintln!(
                "resolved {}: kept the local copy as {copy}, pulled the remote",
                args.key
            ),
            None => eprintln!("resolved {} ({})", args.key, args.resolution),
        }
    }
    Ok(())
}

pub async fn scope(global: &Global, args: ScopeArgs) -> Result<(), CommandError> {
    match args.command {
        ScopeCommand::Ls => {
            let bucket = locate::open_locked(global).await?;
            for s in bucket.scopes()? {
                out!("{}", if s.is_empty() { "(everything)" } else { &s });
            }
            let filter = bucket.scope_filter()?;
            if !filter.is_empty() {
                out!("filter:");
                for line in filter.lines() {
                    out!("  {line}");
                }
            }
        }
        ScopeCommand::Filter { filter, clear } => {
            let rules = filter.build()?;
            if rules.is_none() && !clear {
                let bucket = locate::open_locked(global).await?;
                for line in bucket.scope_filter()?.lines() {
                    out!("{line}");
                }
                return Ok(());
            }
            let bucket = open_connected(global).await?;
            let r = bucket.set_scope_filter(rules.unwrap_or_default()).await?;
            if !global.quiet {
                if clear {
                    eprintln!("cleared the scope filter; pulled {}", r.pulled);
                } else {
                    eprintln!(
                        "set the scope filter; objects it excludes stay here as orphans; pulled {}",
                        r.pulled
                    );
                }
            }
        }
        ScopeCommand::Add { prefix } => {
            let bucket = open_connected(global).await?;
            let r = bucket.add_scope(&prefix).await?;
            if !global.quiet {
                eprintln!("added scope {prefix:?}; pulled {}", r.pulled);
            }
        }
        ScopeCommand::Rm { prefix } => {
            let bucket = locate::open_locked(global).await?;
            if !bucket.scopes()?.contains(&prefix) {
                return Err(CommandError::user(
                    format!("{prefix:?} is not a sync scope; nothing was changed"),
                    "`ferry scope ls` lists the scopes",
                ));
            }
            bucket.remove_scope(&prefix).await?;
            if !global.quiet {
                eprintln!("removed scope {prefix:?}; its local objects stay, as orphans");
            }
        }
    }
    Ok(())
}

pub async fn diff(global: &Global, args: crate::args::DiffArgs) -> Result<(), CommandError> {
    let bucket = open_connected(global).await?;
    let found = bucket.diff(&args.prefix).await?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&found).context("encoding JSON")?
        );
    } else {
        let width = found
            .iter()
            .map(|d| d.kind.describe().len())
            .max()
            .unwrap_or(0);
        for d in &found {
            let kind = d.kind.describe();
            match d.reason {
                Some(r) => out!("{kind:<width$}  {}  ({})", d.key, r.describe()),
                None => out!("{kind:<width$}  {}", d.key),
            }
        }
        if !global.quiet {
            match found.len() {
                0 => eprintln!("no differences"),
                1 => eprintln!("1 key differs"),
                n => eprintln!("{n} keys differ"),
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(CommandError::exit_quietly(1))
    }
}

//! Commands on single objects and listings: init, put, get, cat, ls, stat, rm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ferry::{Body, Bucket, BucketConfig, ListOptions, NewKey, PutOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::args::{
    CatArgs, CheckArgs, DuArgs, GetArgs, Global, InitArgs, LsArgs, MvArgs, PutArgs, RmArgs,
    StatArgs,
};
use crate::command_error::CommandError;
use crate::locate;
use crate::output::{byte_bar, human_size, object_json, rfc3339, LARGE_TRANSFER};

pub async fn init(global: &Global, args: InitArgs) -> Result<(), CommandError> {
    use ferry::remote::encrypted::RemoteMode;
    let dir = global.bucket.clone().unwrap_or(args.dir);
    if dir.join(ferry::INDEX_FILE).exists() {
        if let Some(url) = &args.remote {
            return Err(CommandError::user(
                format!("a ferry bucket already exists in {}", dir.display()),
                format!("to make it sync with {url}, run `ferry remote set {url}`"),
            ));
        }
        return Err(ferry::Error::AlreadyExists { path: dir }.into());
    }
    // A cost no device could unlock with is refused before anything.
    let kdf = args.kdf.params()?;
    let config = BucketConfig::default();
    let bucket = match &args.remote {
        None if args.encrypt => {
            let pass = crate::passphrase::new(global, None, true)?;
            Bucket::create_encrypted(&dir, config, pass.as_bytes(), kdf).await?
        }
        None => Bucket::create(&dir, config).await?,
        Some(url) => {
            // What the remote holds decides, before anything is written locally.
            let spec = crate::syncing::spec_from(
                url,
                args.endpoint,
                args.region,
                args.path_style,
                args.insecure,
            )?;
            let (_, mode) = crate::syncing::check_spec(global, &spec, &dir).await?;
            if let RemoteMode::Encrypted(_) = mode {
                if !global.quiet {
                    eprintln!("The remote is encrypted: unlocking it with its passphrase.");
                }
                let pass = crate::passphrase::existing(global)?;
                // --kdf-memory/--kdf-passes: what this device affords.
                let key = NewKey::Join {
                    passphrase: pass.as_bytes(),
                    afford: kdf,
                };
                Bucket::create_over(&dir, config, spec, mode, key).await?
            } else if args.encrypt {
                ferry::check_new_bucket(url, &mode, ferry::StorageMode::Encrypted)?;
                let pass = crate::passphrase::new(global, None, true)?;
                let key = NewKey::Encrypt {
                    passphrase: pass.as_bytes(),
                    kdf,
                };
                Bucket::create_over(&dir, config, spec, mode, key).await?
            } else {
                let key = match args.plaintext {
                    true => NewKey::PlaintextOverObjects,
                    false => NewKey::Plaintext,
                };
                Bucket::create_over(&dir, config, spec, mode, key).await?
            }
        }
    };
    if !global.quiet {
        let shown = std::path::absolute(&dir).unwrap_or(dir);
        let encrypted = bucket.is_encrypted();
        match &args.remote {
            Some(url) => out!(
                "Created {} ferry bucket in {} syncing with {url}",
                if encrypted { "an encrypted" } else { "a" },
                shown.display()
            ),
            None => out!(
                "Created {} ferry bucket in {} (local only: `ferry remote set URL` adds a remote)",
                if encrypted {
                    "an empty encrypted"
                } else {
                    "an empty"
                },
                shown.display()
            ),
        }
    }
    Ok(())
}

/// Parses `--meta NAME=VALUE` arguments.
pub fn parse_meta(items: &[String]) -> Result<BTreeMap<String, String>, CommandError> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((name, value)) = item.split_once('=') else {
            return Err(CommandError::usage(format!(
                "--meta {item:?} is not NAME=VALUE (for example --meta author=ann)"
            )));
        };
        if let Some(before) = out.insert(name.to_owned(), value.to_owned()) {
            return Err(CommandError::usage(format!(
                "--meta {name:?} is given twice ({before:?} and {value:?}); give each name once"
            )));
        }
    }
    Ok(out)
}

pub async fn put(global: &Global, args: PutArgs) -> Result<(), CommandError> {
    let opts = PutOptions {
        content_type: args.content_type,
        metadata: parse_meta(&args.meta)?,
    };
    ferry::validate_key(&args.key).map_err(ferry::Error::from)?;
    let bucket = locate::open(global).await?;
    let meta = match args.file.as_deref() {
        None => {
            bucket
                .put(&args.key, Body::from_reader(tokio::io::stdin()), opts)
                .await?
        }
        Some(p) if p == Path::new("-") => {
            bucket
                .put(&args.key, Body::from_reader(tokio::io::stdin()), opts)
                .await?
        }
        Some(path) => put_file(&bucket, &args.key, path, opts, global.quiet).await?,
    };
    if !global.quiet {
        eprintln!("stored {} ({})", meta.key, human_size(meta.size));
    }
    warn_if_refused(&bucket, &meta.key);
    Ok(())
}

/// Says at once when the bucket's remote cannot hold a key: the object is
/// stored here, and `ferry status` keeps showing it as not synced.
pub fn warn_if_refused(bucket: &Bucket, key: &str) {
    if let Ok(Some(why)) = bucket.remote_refuses(key) {
        eprintln!(
            "warning: the remote cannot hold the key {key:?} ({why}); it stays on this device \
             only, and `ferry status` counts it as failed. Store it under another key to sync it"
        );
    }
}

/// Stores one file, with a progress bar when it is large.
pub async fn put_file(
    bucket: &Bucket,
    key: &str,
    path: &Path,
    opts: PutOptions,
    quiet: bool,
) -> Result<ferry::ObjectMeta, CommandError> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let bar = byte_bar(
        size,
        quiet || (size < LARGE_TRANSFER && !crate::output::progress_forced()),
    );
    bar.set_message(key.to_owned());
    let meta = bucket
        .put(key, Body::from_reader(bar.wrap_async_read(file)), opts)
        .await;
    crate::output::finish_bar(&bar);
    Ok(meta?)
}

/// Copies an object body to `out`, keeping read (integrity) errors and write
/// errors apart so each is reported as what it is.
pub async fn copy_body(
    body: &mut (impl AsyncRead + Unpin),
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<u64, CommandError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = body
            .read(&mut buf)
            .await
            .map_err(ferry::Error::from_body_io)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await.context("writing output")?;
        total += n as u64;
    }
    out.flush().await.context("writing output")?;
    Ok(total)
}

/// Writes an object to a local file through a temp file, so a failed or
/// corrupt read never leaves a partial file under the final name. `durable`:
/// the file is fsynced before it takes its name (one `get`; a recursive
/// export leaves that to the system, as `cp` and `rclone` do).
pub async fn get_to_file(
    bucket: &Bucket,
    key: &str,
    path: &Path,
    quiet: bool,
    durable: bool,
) -> Result<u64, CommandError> {
    let mut object = bucket.get(key).await?;
    let part = part_path(path);
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let bar = byte_bar(
        object.meta.size,
        quiet || (object.meta.size < LARGE_TRANSFER && !crate::output::progress_forced()),
    );
    bar.set_message(key.to_owned());
    let mut out = bar.wrap_async_write(&mut file);
    let copied = copy_body(&mut object.body, &mut out).await;
    crate::output::finish_bar(&bar);
    let result = match copied {
        Ok(n) if durable => file
            .sync_all()
            .await
            .context("syncing output")
            .map(|()| n)
            .map_err(Into::into),
        Ok(n) => Ok(n),
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => {
            tokio::fs::rename(&part, path)
                .await
                .with_context(|| format!("renaming into {}", path.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            Err(e)
        }
    }
}

fn part_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".ferry-part");
    path.with_file_name(name)
}

pub async fn get(global: &Global, args: GetArgs) -> Result<(), CommandError> {
    ferry::validate_key(&args.key).map_err(ferry::Error::from)?;
    let bucket = locate::open(global).await?;
    crate::syncing::connect_for_reading(global, &bucket, [args.key.as_str()]).await?;
    match args.file.as_deref() {
        Some(path) if path != Path::new("-") => {
            // Into a directory: under the key's last segment, as `cp` does.
            let target = if tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()) {
                let name = args.key.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
                if name.is_empty() || name == "." || name == ".." {
                    return Err(CommandError::usage(format!(
                        "{:?} has no last segment to name a file in {}; give a file path",
                        args.key,
                        path.display()
                    )));
                }
                path.join(name)
            } else {
                path.to_owned()
            };
            get_to_file(&bucket, &args.key, &target, global.quiet, true).await?;
        }
        _ => {
            let mut object = bucket.get(&args.key).await?;
            copy_body(&mut object.body, &mut tokio::io::stdout()).await?;
        }
    }
    Ok(())
}

pub async fn cat(global: &Global, args: CatArgs) -> Result<(), CommandError> {
    for key in &args.keys {
        ferry::validate_key(key).map_err(ferry::Error::from)?;
    }
    let bucket = locate::open(global).await?;
    crate::syncing::connect_for_reading(global, &bucket, args.keys.iter().map(String::as_str))
        .await?;
    let mut stdout = tokio::io::stdout();
    for key in &args.keys {
        let mut object = bucket.get(key).await?;
        copy_body(&mut object.body, &mut stdout).await?;
    }
    Ok(())
}

/// Where an object's content is, for `ls -l`: `local`, `remote` (fetched
/// when read), either `+pinned`.
fn residency_word(bucket: &Bucket, key: &str) -> &'static str {
    match bucket.residency(key) {
        Ok(r) => match (r.cached, r.pinned) {
            (true, false) => "local",
            (true, true) => "local+pinned",
            (false, false) => "remote",
            (false, true) => "remote+pinned",
        },
        Err(_) => "?",
    }
}

pub async fn ls(global: &Global, args: LsArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut opts = ListOptions::prefix(args.prefix.clone()).limit(1000);
    if args.dirs {
        opts = opts.delimiter('/');
    }
    let mut first = true;
    if args.json {
        write_out(&mut out, "[")?;
    }
    loop {
        let page = bucket.list(opts.clone()).await?;
        // Interleave prefixes and objects in key order, as a listing reads.
        let mut entries: Vec<(&str, Option<&ferry::ObjectMeta>)> = page
            .objects
            .iter()
            .map(|o| (o.key.as_str(), Some(o)))
            .chain(page.common_prefixes.iter().map(|p| (p.as_str(), None)))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (name, meta) in entries {
            let line = match (args.json, meta) {
                (true, Some(m)) => object_json(m).to_string(),
                (true, None) => serde_json::json!({ "prefix": name }).to_string(),
                (false, Some(m)) if args.long => format!(
                    "{:>10}  {}  {:<14}  {:<13}  {:<24}  {}",
                    human_size(m.size),
                    rfc3339(m.modified),
                    m.state.as_str(),
                    residency_word(&bucket, &m.key),
                    m.content_type,
                    m.key
                ),
                (false, None) if args.long => format!(
                    "{:>10}  {:24}  {:<14}  {:<13}  {:<24}  {}",
                    "DIR", "", "", "", "", name
                ),
                (false, _) => name.to_owned(),
            };
            if args.json {
                write_out(&mut out, if first { "\n" } else { ",\n" })?;
            }
            write_out(&mut out, &line)?;
            if !args.json {
                write_out(&mut out, "\n")?;
            }
            first = false;
        }
        match page.next_start_after {
            Some(next) => opts = opts.start_after(next),
            None => break,
        }
    }
    if args.json {
        write_out(&mut out, if first { "]\n" } else { "\n]\n" })?;
    }
    std::io::Write::flush(&mut out).context("writing output")?;
    Ok(())
}

fn write_out(out: &mut impl std::io::Write, text: &str) -> Result<(), CommandError> {
    out.write_all(text.as_bytes()).context("writing output")?;
    Ok(())
}

pub async fn stat(global: &Global, args: StatArgs) -> Result<(), CommandError> {
    ferry::validate_key(&args.key).map_err(ferry::Error::from)?;
    let bucket = locate::open(global).await?;
    let meta = bucket.head(&args.key).await?;
    let residency = bucket.residency(&args.key)?;
    let text = if args.json {
        let mut v = object_json(&meta);
        v["cached"] = residency.cached.into();
        v["pinned"] = residency.pinned.into();
        let mut s = serde_json::to_string_pretty(&v).context("encoding JSON")?;
        s.push('\n');
        s
    } else {
        let mut s = format!(
            "key:          {}\nsize:         {} ({} bytes)\nhash:         {}\ncontent type: {}\nmodified:     {}\nstate:        {}\n",
            meta.key,
            human_size(meta.size),
            meta.size,
            meta.hash,
            meta.content_type,
            rfc3339(meta.modified),
            meta.state
        );
        s.push_str(&format!(
            "local:        {}{}\n",
            if residency.cached {
                "content on this device"
            } else {
                "content only on the remote (fetched when read)"
            },
            if residency.pinned { ", pinned" } else { "" }
        ));
        for (name, value) in &meta.metadata {
            s.push_str(&format!("meta:         {name}={value}\n"));
        }
        s
    };
    write_out(&mut std::io::stdout().lock(), &text)
}

pub async fn rm(global: &Global, args: RmArgs) -> Result<(), CommandError> {
    if !args.recursive {
        for key in &args.keys {
            ferry::validate_key(key).map_err(ferry::Error::from)?;
        }
    }
    let bucket = locate::open(global).await?;
    let mut missing = Vec::new();
    let mut removed = 0usize;
    for key in &args.keys {
        if args.recursive {
            for meta in bucket.list_all(&folder(key, args.prefix)).await? {
                if bucket.delete(&meta.key).await? {
                    removed += 1;
                }
            }
        } else if bucket.delete(key).await? {
            removed += 1;
        } else if !args.force {
            missing.push(key.clone());
        }
    }
    if !global.quiet {
        eprintln!(
            "deleted {removed} object{}",
            if removed == 1 { "" } else { "s" }
        );
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CommandError::user(
            format!(
                "no object at {}",
                missing
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "`ferry ls` lists the keys this bucket holds; --force ignores missing keys",
        ))
    }
}

/// What a recursive argument names: the folder `arg/` (as `aws s3
/// --recursive` and rclone read it), or with `plain` the string prefix.
pub fn folder(arg: &str, plain: bool) -> String {
    if plain || arg.is_empty() || arg.ends_with('/') {
        arg.to_owned()
    } else {
        format!("{arg}/")
    }
}

/// `ferry du`: objects and bytes per first-level folder under the prefix
/// (keys directly under it count as `.`), and the total. Streams the
/// listing a page at a time.
pub async fn du(global: &Global, args: DuArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let base = if args.prefix.is_empty() {
        String::new()
    } else {
        folder(&args.prefix, false)
    };
    let mut folders: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total = (0u64, 0u64);
    let mut opts = ListOptions::prefix(base.clone()).limit(1000);
    loop {
        let page = bucket.list(opts.clone()).await?;
        for m in &page.objects {
            let rest = &m.key[base.len()..];
            let name = match rest.find('/') {
                Some(i) => format!("{base}{}", &rest[..=i]),
                None => ".".to_owned(),
            };
            let e = folders.entry(name).or_default();
            e.0 += 1;
            e.1 += m.size;
            total.0 += 1;
            total.1 += m.size;
        }
        match page.next_start_after {
            Some(next) => opts = opts.start_after(next),
            None => break,
        }
    }
    if args.json {
        let rows: Vec<_> = folders
            .iter()
            .map(|(f, (n, b))| serde_json::json!({"folder": f, "objects": n, "bytes": b}))
            .collect();
        let v = serde_json::json!({
            "prefix": base,
            "folders": rows,
            "objects": total.0,
            "bytes": total.1,
        });
        out!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        );
        return Ok(());
    }
    for (f, (n, b)) in &folders {
        out!("{:>10}  {:>8} objects  {f}", human_size(*b), n);
    }
    out!(
        "{:>10}  {:>8} objects  total{}",
        human_size(total.1),
        total.0,
        if base.is_empty() {
            String::new()
        } else {
            format!(" under {base}")
        }
    );
    Ok(())
}

/// `ferry mv`: each object is written under its new name from its own
/// content (the same hash: no content is stored twice) with its content
/// type and metadata, then the old name is deleted.
pub async fn mv(global: &Global, args: MvArgs) -> Result<(), CommandError> {
    let bucket = locate::open(global).await?;
    let pairs: Vec<(String, String)> = if args.recursive {
        let from = folder(&args.source, false);
        let to = folder(&args.dest, false);
        if to.starts_with(&from) {
            return Err(CommandError::usage(format!(
                "cannot move {from} into itself ({to})"
            )));
        }
        let found = bucket.list_all(&from).await?;
        if found.is_empty() {
            return Err(CommandError::user(
                format!("no objects under {from:?}"),
                "`ferry ls` lists the keys this bucket holds",
            ));
        }
        found
            .into_iter()
            .map(|m| {
                let new = format!("{to}{}", &m.key[from.len()..]);
                (m.key, new)
            })
            .collect()
    } else {
        vec![(args.source.clone(), args.dest.clone())]
    };
    for (old, new) in &pairs {
        ferry::validate_key(old).map_err(ferry::Error::from)?;
        ferry::validate_key(new).map_err(ferry::Error::from)?;
        if !args.force && bucket.exists(new).await? {
            return Err(CommandError::user(
                format!("{new:?} already exists"),
                "pass --force to replace it",
            ));
        }
    }
    crate::syncing::connect_for_reading(global, &bucket, pairs.iter().map(|(o, _)| o.as_str()))
        .await?;
    for (old, new) in &pairs {
        let object = bucket.get(old).await?;
        let opts = PutOptions {
            content_type: Some(object.meta.content_type.clone()),
            metadata: object.meta.metadata.clone(),
        };
        bucket
            .put(new, Body::from_reader(object.body), opts)
            .await?;
        bucket.delete(old).await?;
        warn_if_refused(&bucket, new);
    }
    if !global.quiet {
        eprintln!(
            "moved {} object{}",
            pairs.len(),
            if pairs.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// `ferry check`: SQLite's integrity check of the index, then every object
/// whose content is on this device read through and compared with its hash
/// (content only on the remote is not fetched). Each problem is named;
/// any problem exits 1.
/// `check --repair` on an index that does not open: rebuilt from what can
/// be read of it, the rest named.
async fn rebuild_index(global: &Global, args: &CheckArgs) -> Result<(), CommandError> {
    let dir = locate::bucket_dir(global)?;
    let (bucket, report) = ferry::Bucket::rebuild_index(&dir).await?;
    if args.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "rebuilt": report }))
                .context("encoding JSON")?
        );
    } else {
        out!(
            "rebuilt the index: {} objects and {} settings read back; the damaged file is kept as {}",
            report.objects,
            report.settings.len(),
            report.damaged_copy.display()
        );
        for t in &report.partial_tables {
            out!("  {t}: read only up to the damage (what was synced comes back from the remote at the next sync)");
        }
        for k in &report.refetch {
            out!("  {k}: content missing here, downloaded again from the remote when needed");
        }
        for k in &report.lost {
            out!("  lost: {k}: its content was neither here nor on the remote");
        }
        for p in &report.set_aside {
            out!(
                "  set aside: {} (content no object names any more)",
                p.display()
            );
        }
        if !report.settings.iter().any(|s| s == "remote") {
            out!("  the remote setting was not recovered: `ferry remote set URL` attaches it again (with --plaintext for a plaintext remote); the key of an encrypted bucket went with the index: join its remote from a new bucket (`ferry init --remote URL` in another directory)");
        }
        if bucket.is_encrypted() && bucket.is_locked() {
            out!("  the bucket is encrypted: its key file was recovered");
        }
        out!("next: `ferry sync` (it lists the whole remote once)");
    }
    if report.lost.is_empty() {
        Ok(())
    } else {
        Err(CommandError::user(
            format!(
                "{} object(s) could not be recovered (listed above)",
                report.lost.len()
            ),
            "content no object names was set aside under lost+found/ in the bucket directory",
        ))
    }
}

pub async fn check(global: &Global, args: CheckArgs) -> Result<(), CommandError> {
    // A damaged index found at any step of a repair is rebuilt (the bucket
    // of the failed attempt is closed by then).
    match check_bucket(global, &args).await {
        Err(e) if args.repair && e.is_damaged_index() => rebuild_index(global, &args).await,
        other => other,
    }
}

async fn check_bucket(global: &Global, args: &CheckArgs) -> Result<(), CommandError> {
    let bucket = locate::open_locked(global).await?;
    let mut index_problems = bucket.check_index().await?;
    let mut damaged: Vec<(String, String)> = Vec::new();
    let (mut objects, mut verified) = (0u64, 0u64);
    let mut opts = ListOptions::prefix(args.prefix.clone()).limit(1000);
    loop {
        let page = bucket.list(opts.clone()).await?;
        for m in &page.objects {
            objects += 1;
            if !bucket.residency(&m.key).is_ok_and(|r| r.cached) {
                continue;
            }
            let result = async {
                let mut object = bucket.get(&m.key).await?;
                tokio::io::copy(&mut object.body, &mut tokio::io::sink())
                    .await
                    .map_err(|e| ferry::Error::IndexData(e.to_string()))?;
                Ok::<(), ferry::Error>(())
            }
            .await;
            match result {
                Ok(()) => verified += 1,
                Err(e) => damaged.push((m.key.clone(), e.to_string())),
            }
        }
        match page.next_start_after {
            Some(next) => opts = opts.start_after(next),
            None => break,
        }
    }

    // The remote side: connected when asked, or to repair from it.
    let has_remote = bucket.remote_spec()?.is_some();
    let mut connect_error: Option<String> = None;
    if args.remote || (args.repair && has_remote && !damaged.is_empty()) {
        if let Err(e) = crate::syncing::connect(global, &bucket).await {
            if args.remote {
                return Err(e);
            }
            connect_error = Some(e.message());
        }
    }
    let mut differences = Vec::new();
    let mut remote_check = ferry::RemoteCheck::default();
    if args.remote {
        differences = bucket.diff(&args.prefix).await?;
        remote_check = bucket.verify_remote(&args.prefix).await?;
    }

    // Repairs.
    let mut repaired: Vec<String> = Vec::new();
    let mut unrepaired: Vec<(String, String)> = Vec::new();
    let mut index_repaired = false;
    if args.repair {
        if !index_problems.is_empty() {
            let left = bucket.repair_index().await?;
            index_repaired = left.is_empty();
            if !index_repaired {
                // Beyond what REINDEX fixes: rebuild it.
                return Err(ferry::Error::DamagedIndex {
                    path: bucket.dir().join(ferry::INDEX_FILE),
                    detail: left.join("; "),
                }
                .into());
            }
            index_problems = left;
        }
        for (key, _) in std::mem::take(&mut damaged) {
            let outcome = match (&connect_error, has_remote) {
                (_, false) => ferry::Repair::Unrepairable(
                    "the bucket has no remote to download it from (write it again, or delete it)"
                        .into(),
                ),
                (Some(e), true) => {
                    ferry::Repair::Unrepairable(format!("the remote is not reachable: {e}"))
                }
                (None, true) => bucket.repair(&key).await?,
            };
            match outcome {
                ferry::Repair::Refetched => repaired.push(key),
                ferry::Repair::Unrepairable(why) => unrepaired.push((key, why)),
            }
        }
        damaged = unrepaired.clone();
    }

    if args.json {
        let mut v = serde_json::json!({
            "index": if index_problems.is_empty() { "ok" } else { "damaged" },
            "index_problems": index_problems,
            "objects": objects,
            "verified": verified,
            "damaged": damaged
                .iter()
                .map(|(k, e)| serde_json::json!({"key": k, "error": e}))
                .collect::<Vec<_>>(),
        });
        if args.repair {
            v["repaired"] = serde_json::json!(repaired);
            v["index_repaired"] = serde_json::json!(index_repaired);
        }
        if args.remote {
            v["remote"] = serde_json::json!({
                "differences": differences,
                "verified": remote_check.verified,
                "unverifiable": remote_check.unverifiable,
                "mismatched": remote_check.mismatched,
            });
        }
        out!(
            "{}",
            serde_json::to_string_pretty(&v).context("encoding JSON")?
        );
    } else {
        for p in &index_problems {
            out!("index: {p}");
        }
        if index_repaired {
            out!("repaired: the index (its indexes were rebuilt)");
        }
        for k in &repaired {
            out!("repaired: {k} (downloaded again from the remote)");
        }
        for (k, e) in &damaged {
            if args.repair {
                out!("cannot repair: {k}: {e}");
            } else {
                out!("damaged: {k}: {e}");
            }
        }
        for d in &differences {
            out!("differs: {} {}", d.kind.describe(), d.key);
        }
        for m in &remote_check.mismatched {
            out!("remote mismatch: {}: {}", m.key, m.detail);
        }
        out!(
            "{objects} objects, {verified} verified on this device, {} damaged{}; index {}",
            damaged.len(),
            if repaired.is_empty() {
                String::new()
            } else {
                format!(", {} repaired", repaired.len())
            },
            if index_problems.is_empty() {
                "ok"
            } else {
                "damaged"
            }
        );
        if args.remote {
            out!(
                "remote: {} verified by hash, {} without a ferry hash, {} mismatched, {} differ",
                remote_check.verified,
                remote_check.unverifiable,
                remote_check.mismatched.len(),
                differences.len()
            );
        }
    }
    let local_ok = index_problems.is_empty() && damaged.is_empty();
    let remote_ok = differences.is_empty() && remote_check.mismatched.is_empty();
    if local_ok && remote_ok {
        Ok(())
    } else if !local_ok {
        Err(CommandError::user(
            "the bucket is damaged (each problem is listed above)",
            if args.repair {
                "what could not be repaired is named with the reason; an object is also repaired \
                 by writing it again (`ferry put KEY FILE`); no reader was given damaged bytes"
            } else {
                "`ferry check --repair` downloads damaged objects again from the remote where it \
                 has them; no reader was given damaged bytes"
            },
        ))
    } else {
        Err(CommandError::user(
            "the bucket and its remote differ (listed above)",
            "`ferry sync` brings them together; a remote mismatch means the remote copy was \
             replaced without its ETag changing, or tampered with",
        ))
    }
}

//! `ferry cp`: copying files and folders into the bucket, objects and
//! prefixes out of it, and objects within it.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use ferry::{Body, Bucket, PutOptions};
use tokio::task::JoinSet;

use crate::args::{CpArgs, Global};
use crate::command_error::CommandError;
use crate::locate;
use crate::objects::{get_to_file, put_file};
use crate::output::byte_bar;

/// How many files move at once (puts share group commits).
const PARALLEL: usize = 16;

/// One side of a copy.
enum Place {
    Local(PathBuf),
    Bucket(String),
}

fn place(arg: &str) -> Place {
    match arg.strip_prefix("ferry:") {
        Some(key) => Place::Bucket(key.to_owned()),
        None => Place::Local(PathBuf::from(arg)),
    }
}

/// Joins a key prefix and a relative name with exactly one `/`.
fn join_key(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}/{rel}")
    }
}

pub async fn cp(global: &Global, args: CpArgs) -> Result<(), CommandError> {
    let filter = args.filter.build()?;
    if filter.is_some() && !args.recursive {
        return Err(CommandError::usage(
            "--include, --exclude, --filter and --filter-from apply to `cp -r`",
        ));
    }
    let filter = filter.unwrap_or_default();
    let source = place(&args.source);
    // A bare destination is a key prefix when the source is local.
    let dest = match (&source, place(&args.dest)) {
        (Place::Local(_), Place::Local(p)) => Place::Bucket(p.to_string_lossy().into_owned()),
        (_, d) => d,
    };
    let bucket = locate::open(global).await?;
    // A recursive source in the bucket names a folder (`photos` is
    // `photos/`), unless --prefix asks for a plain string prefix.
    let source = match source {
        Place::Bucket(from) if args.recursive => {
            Place::Bucket(crate::objects::folder(&from, args.prefix))
        }
        other => other,
    };
    if let Place::Bucket(from) = &source {
        // Content that is only on the remote (evicted, lazy) is fetched.
        let keys: Vec<String> = if args.recursive {
            bucket
                .list_all(from)
                .await?
                .into_iter()
                .map(|m| m.key)
                .filter(|k| filter.matches(relative(from, k)))
                .collect()
        } else {
            vec![from.clone()]
        };
        crate::syncing::connect_for_reading(global, &bucket, keys.iter().map(String::as_str))
            .await?;
    }
    match (source, dest) {
        (Place::Local(src), Place::Bucket(prefix)) => {
            import(&bucket, &src, &prefix, &args, &filter, global.quiet).await
        }
        (Place::Bucket(key), Place::Local(dst)) => {
            export(&bucket, &key, &dst, args.recursive, &filter, global.quiet).await
        }
        (Place::Bucket(from), Place::Bucket(to)) => {
            copy_within(&bucket, &from, &to, args.recursive, &filter).await
        }
        (Place::Local(_), Place::Local(_)) => Err(CommandError::usage(
            "one side of `ferry cp` must be `ferry:KEY`",
        )),
    }
}

/// A key's path below the copied prefix, which filters judge.
fn relative<'k>(prefix: &str, key: &'k str) -> &'k str {
    key.get(prefix.len()..)
        .unwrap_or(key)
        .trim_start_matches('/')
}

/// The "(N files and M folders excluded by the filters)" part of a
/// summary (the files inside excluded folders are not looked at).
fn excluded_note(files: usize, folders: usize) -> String {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (files, folders) {
        (0, 0) => String::new(),
        (f, 0) => format!(" ({} excluded by the filters)", plural(f, "file")),
        (0, d) => format!(" ({} excluded by the filters)", plural(d, "folder")),
        (f, d) => format!(
            " ({} and {} excluded by the filters)",
            plural(f, "file"),
            plural(d, "folder")
        ),
    }
}

/// Failures collected while copying many files: each is reported, none is skipped silently.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, what: &str, err: impl std::fmt::Display) {
        let line = format!("{what}: {err}");
        eprintln!("error: {line}");
        self.0.push(line);
    }

    fn finish(self, total: usize, verb: &str) -> Result<(), CommandError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CommandError::user(
                format!("{} of {total} files could not be {verb}", self.0.len()),
                "each failure is listed above; fix them and run the same command again",
            ))
        }
    }
}

async fn import(
    bucket: &Bucket,
    src: &Path,
    prefix: &str,
    args: &CpArgs,
    filter: &ferry::Filter,
    quiet: bool,
) -> Result<(), CommandError> {
    let recursive = args.recursive;
    let meta = tokio::fs::metadata(src)
        .await
        .with_context(|| format!("reading {}", src.display()))?;
    if !meta.is_dir() {
        let key = if prefix.is_empty() || prefix.ends_with('/') {
            let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                CommandError::usage(format!(
                    "{} has no UTF-8 file name to use as a key",
                    src.display()
                ))
            })?;
            join_key(prefix, name)
        } else {
            prefix.to_owned()
        };
        put_file(bucket, &key, src, PutOptions::default(), quiet).await?;
        return Ok(());
    }
    if !recursive {
        return Err(CommandError::usage(format!(
            "{} is a directory; use `cp -r` to copy it",
            src.display()
        )));
    }
    // The walk streams into at most PARALLEL puts in flight: memory stays
    // bounded whatever the tree's size (no list of every file first).
    let mut failures = Failures::default();
    let bar = crate::output::count_bar(quiet);
    let mut tasks = JoinSet::new();
    let mut done = 0usize;
    let mut copied = 0usize;
    let mut skipped = 0usize;
    let mut excluded = 0usize;
    let mut finish = |joined: Result<(PathBuf, Result<(), String>), tokio::task::JoinError>,
                      failures: &mut Failures| {
        match joined {
            Ok((_, Ok(()))) => copied += 1,
            Ok((path, Err(e))) => failures.add(&path.display().to_string(), e),
            Err(e) => failures.add("copy task", e),
        }
        done += 1;
        bar.set_message(format!("{done} files"));
    };
    // Folders the filters exclude are not walked (as rclone does not).
    let pruned = std::cell::Cell::new(0usize);
    let walk_into = |e: &walkdir::DirEntry| {
        let walk = e.depth() == 0
            || !e.file_type().is_dir()
            || filter.includes_dir(&relative_path(src, e.path()).unwrap_or_default());
        if !walk {
            pruned.set(pruned.get() + 1);
        }
        walk
    };
    for entry in walkdir::WalkDir::new(src)
        .follow_links(args.copy_links)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(walk_into)
    {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                // Unreadable folders, dangling links and link loops (with
                // -L): named and counted, never silently dropped.
                let path = e.path().unwrap_or(src).display().to_string();
                let why = match (e.loop_ancestor(), e.io_error()) {
                    (Some(a), _) => format!("a symbolic link loop (back to {})", a.display()),
                    (None, Some(io)) if io.kind() == std::io::ErrorKind::NotFound => {
                        "a symbolic link to nothing".to_owned()
                    }
                    (None, Some(io)) => io.to_string(),
                    (None, None) => e.to_string(),
                };
                failures.add(&path, why);
                continue;
            }
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if let Some(rel) = relative_path(src, entry.path()) {
            if !filter.matches(&rel) {
                excluded += 1;
                continue;
            }
        }
        if !kind.is_file() {
            let why = if kind.is_symlink() {
                "a symbolic link, not followed (-L/--copy-links follows links)"
            } else {
                "not a regular file (a fifo, socket or device)"
            };
            if !quiet {
                eprintln!("skipped: {}: {why}", entry.path().display());
            }
            skipped += 1;
            continue;
        }
        let rel = entry.path().strip_prefix(src).unwrap_or(entry.path());
        let mut parts = Vec::new();
        for c in rel.components() {
            match c.as_os_str().to_str() {
                Some(s) => parts.push(s),
                None => break,
            }
        }
        if parts.len() != rel.components().count() {
            failures.add(
                &entry.path().display().to_string(),
                "the file name is not UTF-8, so it cannot be a key",
            );
            continue;
        }
        let path = entry.path().to_owned();
        let key = join_key(prefix, &parts.join("/"));

        while tasks.len() >= PARALLEL {
            if let Some(joined) = tasks.join_next().await {
                finish(joined, &mut failures);
            }
        }
        let bucket = bucket.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let result = async {
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = Body::from_reader(bar.wrap_async_read(file));
                bucket
                    .put(&key, body, PutOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            .await;
            (path, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        finish(joined, &mut failures);
    }
    bar.finish_and_clear();
    if !quiet {
        let mut line = format!(
            "copied {copied} file{} into the bucket",
            if copied == 1 { "" } else { "s" }
        );
        line.push_str(&excluded_note(excluded, pruned.get()));
        if skipped > 0 {
            line.push_str(&format!("; skipped {skipped} (named above)"));
        }
        if !failures.0.is_empty() {
            line.push_str(&format!("; {} failed (named above)", failures.0.len()));
        }
        eprintln!("{line}");
    }
    // Every entry that was to be copied: the copied and the failed.
    let attempted = copied + failures.0.len();
    failures.finish(attempted, "copied")
}

/// `path` below `root` with `/` separators, when every part is UTF-8.
fn relative_path(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// Maps a key (relative to the exported prefix) to a path under `dir`,
/// refusing names a file system cannot hold faithfully.
fn key_path(dir: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut path = dir.to_owned();
    for segment in rel.split('/') {
        if segment.is_empty() {
            return Err("the key has an empty segment (`//` or a trailing `/`), which no file name can hold".into());
        }
        let comp = Path::new(segment).components().next();
        if !matches!(comp, Some(Component::Normal(_))) || segment.contains('\\') && cfg!(windows) {
            return Err(format!(
                "the key segment {segment:?} is not a plain file name"
            ));
        }
        path.push(segment);
    }
    Ok(path)
}

async fn export(
    bucket: &Bucket,
    key: &str,
    dst: &Path,
    recursive: bool,
    filter: &ferry::Filter,
    quiet: bool,
) -> Result<(), CommandError> {
    if !recursive {
        let target = if tokio::fs::metadata(dst).await.is_ok_and(|m| m.is_dir()) {
            dst.join(key.rsplit('/').next().unwrap_or(key))
        } else {
            dst.to_owned()
        };
        get_to_file(bucket, key, &target, quiet, true).await?;
        return Ok(());
    }
    // The listing a page at a time, a few files in flight: memory stays
    // flat whatever the prefix holds.
    let bar = byte_bar(0, quiet);
    let mut failures = Failures::default();
    let mut tasks: JoinSet<(String, u64, Result<(), String>)> = JoinSet::new();
    let mut total = 0usize;
    let mut done = 0usize;
    let mut excluded = 0usize;
    let mut opts = ferry::ListOptions::prefix(key).limit(1000);
    loop {
        let page = bucket.list(opts.clone()).await?;
        for meta in page.objects {
            if !filter.matches(relative(key, &meta.key)) {
                excluded += 1;
                continue;
            }
            total += 1;
            bar.inc_length(meta.size);
            let rel = meta.key[key.len()..].trim_start_matches('/');
            let rel = if rel.is_empty() {
                meta.key.rsplit('/').next().unwrap_or(&meta.key)
            } else {
                rel
            };
            let path = match key_path(dst, rel) {
                Ok(p) => p,
                Err(e) => {
                    failures.add(&meta.key, e);
                    continue;
                }
            };
            while tasks.len() >= PARALLEL {
                if let Some(joined) = tasks.join_next().await {
                    done += 1;
                    exported(joined, &bar, &mut failures, done, total);
                }
            }
            let bucket = bucket.clone();
            tasks.spawn(async move {
                let result = async {
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                    }
                    get_to_file(&bucket, &meta.key, &path, true, false)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.message())
                }
                .await;
                (meta.key, meta.size, result)
            });
        }
        match page.next_start_after {
            Some(next) => opts = opts.start_after(next),
            None => break,
        }
    }
    while let Some(joined) = tasks.join_next().await {
        done += 1;
        exported(joined, &bar, &mut failures, done, total);
    }
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "copied {} of {total} objects to {}{}",
            total - failures.0.len().min(total),
            dst.display(),
            excluded_note(excluded, 0)
        );
    }
    failures.finish(total, "exported")
}

/// Counts one finished export.
fn exported(
    joined: Result<(String, u64, Result<(), String>), tokio::task::JoinError>,
    bar: &indicatif::ProgressBar,
    failures: &mut Failures,
    done: usize,
    total: usize,
) {
    match joined {
        Ok((key, size, result)) => {
            if let Err(e) = result {
                failures.add(&key, e);
            }
            bar.inc(size);
        }
        Err(e) => failures.add("(task)", e),
    }
    bar.set_message(format!("{done}/{total} files"));
}

async fn copy_within(
    bucket: &Bucket,
    from: &str,
    to: &str,
    recursive: bool,
    filter: &ferry::Filter,
) -> Result<(), CommandError> {
    let pairs: Vec<(String, String)> = if recursive {
        bucket
            .list_all(from)
            .await?
            .into_iter()
            .filter(|m| filter.matches(relative(from, &m.key)))
            .map(|m| {
                let rel = m.key[from.len()..].trim_start_matches('/').to_owned();
                let dest = join_key(to, &rel);
                (m.key, dest)
            })
            .collect()
    } else {
        vec![(from.to_owned(), to.to_owned())]
    };
    for (src, dst) in pairs {
        let object = bucket.get(&src).await?;
        let opts = PutOptions {
            content_type: Some(object.meta.content_type.clone()),
            metadata: object.meta.metadata.clone(),
        };
        bucket
            .put(&dst, Body::from_reader(object.body), opts)
            .await?;
    }
    Ok(())
}

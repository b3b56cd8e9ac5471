//! Finding the bucket: `--bucket`, then `FERRY_BUCKET` (both via clap), then
//! `.ferry` in the current directory or the nearest parent.

use std::path::{Path, PathBuf};

use ferry::Bucket;

use crate::args::Global;
use crate::command_error::CommandError;

pub use crate::config::DEFAULT_DIR;

/// Resolves the bucket directory without opening it.
pub fn bucket_dir(global: &Global) -> Result<PathBuf, CommandError> {
    if let Some(dir) = &global.bucket {
        // The folder that holds the bucket (`--bucket photos` for
        // `photos/.ferry`) is accepted as discovery accepts it.
        let inner = dir.join(DEFAULT_DIR);
        if !dir.join(ferry::INDEX_FILE).is_file() && inner.join(ferry::INDEX_FILE).is_file() {
            return Ok(inner);
        }
        return Ok(dir.clone());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        CommandError::from(anyhow::Error::new(e).context("reading the current directory"))
    })?;
    find_upwards(&cwd).ok_or_else(|| {
        CommandError::user(
            format!(
                "no ferry bucket in {} or any parent directory",
                cwd.display()
            ),
            "run `ferry init` to create one here, or pass --bucket DIR (or set FERRY_BUCKET)",
        )
    })
}

fn find_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|d| d.join(DEFAULT_DIR))
        .find(|candidate| candidate.join(ferry::INDEX_FILE).is_file())
}

/// Opens the bucket the command should use, unlocked if it is encrypted.
pub async fn open(global: &Global) -> Result<Bucket, CommandError> {
    let bucket = open_configured(global).await?;
    crate::passphrase::unlock(global, &bucket).await?;
    Ok(bucket)
}

/// Opens the bucket for a command that works while it is locked (listing,
/// status): unlocked only when a passphrase was given, never prompting.
pub async fn open_locked(global: &Global) -> Result<Bucket, CommandError> {
    let bucket = open_configured(global).await?;
    crate::passphrase::unlock_if_given(global, &bucket).await?;
    Ok(bucket)
}

/// Opens the bucket and brings its sync settings in line with the
/// configuration files (settings take effect at the next command).
pub async fn open_configured(global: &Global) -> Result<Bucket, CommandError> {
    let dir = bucket_dir(global)?;
    let bucket = Bucket::open(&dir).await?;
    if bucket.is_disk_full() && !global.quiet {
        eprintln!(
            "warning: the disk holding {} is full: the bucket is open for reading only (free space to write to it)",
            dir.display()
        );
    }
    let file = crate::config::load(&dir)?;
    crate::config::apply(&bucket, &file).await?;
    Ok(bucket)
}

//! Where an encrypted bucket's passphrase comes from: `FERRY_PASSPHRASE`,
//! `--passphrase-file FILE` (its first line), or a no-echo prompt when
//! standard input is a terminal. New passphrases (`init --encrypt`,
//! `passwd`) come from `FERRY_NEW_PASSPHRASE`, `--new-passphrase-file`, or
//! are asked twice at the prompt.

use std::io::IsTerminal;
use std::path::Path;

use ferry::Bucket;
use zeroize::Zeroizing;

use crate::args::Global;
use crate::command_error::CommandError;

/// The environment variable holding the passphrase.
pub const ENV: &str = "FERRY_PASSPHRASE";
/// The environment variable holding a new passphrase (`passwd`).
pub const NEW_ENV: &str = "FERRY_NEW_PASSPHRASE";

/// A passphrase, zeroized when dropped.
pub type Secret = Zeroizing<String>;

fn from_file(path: &Path) -> Result<Secret, CommandError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CommandError::user(
            format!("cannot read the passphrase file {}: {e}", path.display()),
            "pass a readable file to --passphrase-file",
        )
    })?);
    let line = text.lines().next().unwrap_or("");
    Ok(Zeroizing::new(line.to_owned()))
}

fn prompt(question: &str) -> Result<Secret, CommandError> {
    rpassword::prompt_password(question)
        .map(Zeroizing::new)
        .map_err(|e| CommandError::user(format!("reading the passphrase: {e}"), no_source_hint()))
}

fn no_source_hint() -> String {
    format!("set {ENV}, pass --passphrase-file FILE, or run ferry at a terminal")
}

fn check_not_empty(p: Secret) -> Result<Secret, CommandError> {
    if p.is_empty() {
        return Err(CommandError::user(
            "the passphrase is empty",
            no_source_hint(),
        ));
    }
    Ok(p)
}

/// The passphrase without prompting, if one was given.
pub fn given(global: &Global) -> Result<Option<Secret>, CommandError> {
    if let Some(path) = &global.passphrase_file {
        return from_file(path).and_then(check_not_empty).map(Some);
    }
    match std::env::var(ENV) {
        Ok(v) => check_not_empty(Zeroizing::new(v)).map(Some),
        Err(_) => Ok(None),
    }
}

/// The passphrase of an existing bucket: given, or asked once.
pub fn existing(global: &Global) -> Result<Secret, CommandError> {
    if let Some(p) = given(global)? {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::user(
            "the bucket is encrypted and no passphrase was given",
            no_source_hint(),
        ));
    }
    check_not_empty(prompt("Passphrase: ")?)
}

/// A new passphrase: from `new_file`, `FERRY_NEW_PASSPHRASE` or (`fallback_given`)
/// the usual sources, else asked twice at a terminal.
pub fn new(
    global: &Global,
    new_file: Option<&Path>,
    fallback_given: bool,
) -> Result<Secret, CommandError> {
    if let Some(path) = new_file {
        return from_file(path).and_then(check_not_empty);
    }
    if let Ok(v) = std::env::var(NEW_ENV) {
        return check_not_empty(Zeroizing::new(v));
    }
    if fallback_given {
        if let Some(p) = given(global)? {
            return Ok(p);
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::user(
            "a new passphrase is needed and none was given",
            format!("set {NEW_ENV} (or {ENV} for init), pass a passphrase file, or run ferry at a terminal"),
        ));
    }
    let first = check_not_empty(prompt("New passphrase: ")?)?;
    let second = prompt("Repeat the passphrase: ")?;
    if *first != *second {
        return Err(CommandError::user(
            "the two passphrases differ",
            "nothing was changed; run the command again",
        ));
    }
    Ok(first)
}

/// Unlocks `bucket` if it is encrypted (asking for the passphrase if needed).
pub async fn unlock(global: &Global, bucket: &Bucket) -> Result<(), CommandError> {
    if bucket.is_locked() {
        let p = existing(global)?;
        bucket.unlock(p.as_bytes()).await?;
    }
    Ok(())
}

/// Unlocks `bucket` if a passphrase was given; otherwise leaves it locked
/// (for commands that work locked: ls, status, ...).
pub async fn unlock_if_given(global: &Global, bucket: &Bucket) -> Result<(), CommandError> {
    if bucket.is_locked() {
        if let Some(p) = given(global)? {
            bucket.unlock(p.as_bytes()).await?;
        }
    }
    Ok(())
}

/// Asks a yes/no question on the terminal; `false` when stdin is not one
/// (the caller then says which flag answers yes).
pub fn confirm(question: &str) -> Result<bool, CommandError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CommandError::from(anyhow::anyhow!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

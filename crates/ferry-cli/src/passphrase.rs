//! Where an encrypted bucket's passphrase comes from: `--passphrase-file
//! FILE` (its first line), `--passphrase-command CMD` (the first line it
//! prints: a password manager), `FERRY_PASSPHRASE`, or a no-echo prompt
//! when standard input is a terminal. The variables are moved out of the
//! process environment before anything else runs (no thread, child or
//! core file sees them). New passphrases (`init --encrypt`,
//! `passwd`, `rekey`) come from `FERRY_NEW_PASSPHRASE`, `--new-passphrase-file`, or
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

/// `FERRY_PASSPHRASE` and `FERRY_NEW_PASSPHRASE`, taken out of the
/// environment at start.
static FROM_ENV: std::sync::OnceLock<(Option<Secret>, Option<Secret>)> = std::sync::OnceLock::new();

/// Moves the passphrase variables out of the process environment. Called
/// first in `main`, while the process has one thread (changing the
/// environment is only sound then).
pub fn take_from_env() {
    let take = |name: &str| {
        let value = std::env::var(name).ok().map(Zeroizing::new);
        if value.is_some() {
            std::env::remove_var(name);
        }
        value
    };
    let _ = FROM_ENV.set((take(ENV), take(NEW_ENV)));
}

fn env_secret(new: bool) -> Option<Secret> {
    let (current, next) = FROM_ENV.get()?;
    if new {
        next.clone()
    } else {
        current.clone()
    }
}

/// The most a passphrase command may print.
const COMMAND_OUTPUT_MAX: usize = 64 * 1024;

/// The first line a password-manager command prints (`sh -c CMD`; its
/// stderr and the terminal stay its own). Its output is read into one
/// buffer of fixed size, zeroized when dropped (a growing buffer, as
/// `Command::output` uses, would leave copies of the passphrase in freed
/// memory).
fn from_command(cmd: &str) -> Result<Secret, CommandError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        CommandError::user(
            format!("cannot run the passphrase command `{cmd}`: {e}"),
            "--passphrase-command runs its argument with `sh -c`",
        )
    };
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(cannot)?;
    let mut buf = Zeroizing::new(vec![0u8; COMMAND_OUTPUT_MAX]);
    let mut len = 0;
    let mut too_long = false;
    if let Some(mut out) = child.stdout.take() {
        loop {
            if len == buf.len() {
                // Drain the rest so the command is not blocked on a pipe.
                too_long = std::io::copy(&mut out, &mut std::io::sink()).map_err(cannot)? > 0;
                break;
            }
            match out.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(cannot(e)),
            }
        }
    }
    let status = child.wait().map_err(cannot)?;
    if !status.success() {
        return Err(CommandError::user(
            format!("the passphrase command `{cmd}` failed ({status})"),
            "nothing was changed; check the command (its messages are above)",
        ));
    }
    if too_long {
        return Err(CommandError::user(
            format!("the passphrase command `{cmd}` printed more than 64 KiB"),
            "it should print the passphrase on its first line",
        ));
    }
    let line = buf[..len].split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Valid UTF-8 is copied once, into the zeroized result; invalid bytes
    // are replaced in a string that becomes the result itself.
    Ok(Zeroizing::new(String::from_utf8_lossy(line).into_owned()))
}

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
    format!(
        "set {ENV}, pass --passphrase-file FILE or --passphrase-command CMD, or run ferry at a terminal"
    )
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
    if let Some(cmd) = &global.passphrase_command {
        return from_command(cmd).and_then(check_not_empty).map(Some);
    }
    match env_secret(false) {
        Some(v) => check_not_empty(v).map(Some),
        None => Ok(None),
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

/// The passphrase of a remote another device rekeyed (an existing one,
/// asked once): from `new_file`, `FERRY_NEW_PASSPHRASE`, or a terminal.
pub fn rekeyed(new_file: Option<&Path>) -> Result<Secret, CommandError> {
    if let Some(path) = new_file {
        return from_file(path).and_then(check_not_empty);
    }
    if let Some(v) = env_secret(true) {
        return check_not_empty(v);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::user(
            "the rekeyed remote's passphrase is needed and none was given",
            format!("set {NEW_ENV}, pass --new-passphrase-file, or run ferry at a terminal"),
        ));
    }
    check_not_empty(prompt("Passphrase of the rekeyed remote: ")?)
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
    if let Some(v) = env_secret(true) {
        return check_not_empty(v);
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

/// For a process that holds an unlocked bucket for long (`watch`,
/// `serve`): no core file may carry its keys. Sets the core size limit to
/// 0 (soft and hard) and, on Linux, makes the process non-dumpable
/// (`PR_SET_DUMPABLE` 0: no core file even if a limit is raised again, no
/// ptrace by the same user, `/proc/<pid>` files owned by root). A failure
/// is a warning: the process still runs.
pub fn disable_core_dumps() {
    let zero = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Core, zero) {
        eprintln!("warning: could not set the core file size limit to 0: {e}");
    }
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("warning: could not disable core dumps: {e}");
    }
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

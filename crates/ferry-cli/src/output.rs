//! Output formats shared by commands: JSON shapes, sizes and times.

use std::time::SystemTime;

use anyhow::Context;
use ferry::ObjectMeta;
use serde_json::{json, Value};

use crate::command_error::CommandError;

/// The JSON shape of an object (`stat --json`, `ls --json`).
pub fn object_json(meta: &ObjectMeta) -> Value {
    json!({
        "key": meta.key,
        "size": meta.size,
        "hash": meta.hash.to_hex(),
        "content_type": meta.content_type,
        "metadata": meta.metadata,
        "modified": rfc3339(meta.modified),
        "state": meta.state.as_str(),
    })
}

/// A timestamp as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Set by `--progress`: bars are drawn even when stderr is not a terminal.
static FORCE_PROGRESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--progress`: draw progress on stderr even when it is not a terminal
/// (a log file, a CI job), one plain line per second.
pub fn force_progress() {
    FORCE_PROGRESS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// True when `--progress` was given.
pub fn progress_forced() -> bool {
    FORCE_PROGRESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Where bars draw: stderr when it is a terminal (indicatif checks), plain
/// lines with `--progress`.
pub fn draw_target() -> indicatif::ProgressDrawTarget {
    if progress_forced() {
        indicatif::ProgressDrawTarget::term_like(Box::new(LineTerm::default()))
    } else {
        indicatif::ProgressDrawTarget::stderr()
    }
}

/// A "terminal" that writes each drawn line to stderr as a plain line
/// (no cursor movement): progress a log can hold, at most a line a second,
/// and the last line drawn always (written when the bar goes away), so a
/// log ends with where the transfer got.
#[derive(Debug, Default)]
struct LineTerm {
    /// When the last line was written: at most one a second.
    last: std::sync::Mutex<Option<std::time::Instant>>,
    /// The newest line held back by that limit.
    held: std::sync::Mutex<Option<String>>,
}

impl Drop for LineTerm {
    fn drop(&mut self) {
        if let Some(line) = self.held.lock().ok().and_then(|mut h| h.take()) {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

impl indicatif::TermLike for LineTerm {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        if let Ok(mut last) = self.last.lock() {
            let now = std::time::Instant::now();
            let mut held = self.held.lock().ok();
            if last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
                if let Some(h) = held.as_mut() {
                    **h = Some(s.trim_end().to_owned());
                }
                return Ok(());
            }
            *last = Some(now);
            if let Some(h) = held.as_mut() {
                **h = None;
            }
        }
        use std::io::Write;
        writeln!(std::io::stderr().lock(), "{}", s.trim_end())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write_line(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A byte progress bar on stderr; hidden with `--quiet` or when stderr is
/// not a terminal (unless `--progress`).
pub fn byte_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), draw_target());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Ends a bar: cleared from a terminal; with `--progress` its final state
/// is drawn, so the log's last line says where the transfer got.
pub fn finish_bar(bar: &indicatif::ProgressBar) {
    if progress_forced() {
        bar.finish();
    } else {
        bar.finish_and_clear();
    }
}

/// The progress of a sync run on stderr: the bytes of its uploads and
/// downloads done of those planned, with rate and ETA (as `put` shows
/// them), and the objects done of those planned; objects alone while the
/// run moves no content. Hidden when asked.
pub struct SyncBar {
    bar: indicatif::ProgressBar,
    verb: &'static str,
    /// Drawn as bytes (once a run plans any).
    bytes: std::sync::atomic::AtomicBool,
}

impl SyncBar {
    /// A bar saying `verb` (`syncing`, `pushing`, `pulling`).
    pub fn new(verb: &'static str, hidden: bool) -> SyncBar {
        let bar = object_bar(hidden);
        bar.set_message(verb);
        SyncBar {
            bar,
            verb,
            bytes: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True when nothing is drawn.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Shows where the run is.
    pub fn update(&self, p: ferry::SyncProgress) {
        use std::sync::atomic::Ordering;
        if p.bytes_total == 0 && !self.bytes.load(Ordering::Relaxed) {
            self.bar.set_length(p.total);
            self.bar.set_position(p.done);
            return;
        }
        if !self.bytes.swap(true, Ordering::Relaxed) {
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                self.bar.set_style(style.progress_chars("=> "));
            }
            self.bar.set_position(0);
            self.bar.reset_eta();
        }
        // The message last: the draw it may trigger shows all of it.
        self.bar.set_length(p.bytes_total);
        self.bar.set_position(p.bytes_done);
        self.bar
            .set_message(format!("{} {}/{} objects", self.verb, p.done, p.total));
    }

    /// Ends the bar ([`finish_bar`]).
    pub fn finish(&self) {
        finish_bar(&self.bar);
    }
}

/// A progress bar of objects done of a total (sync, rekey) on stderr;
/// hidden when asked.
pub fn object_bar(hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), draw_target());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} objects, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A progress line for a transfer whose size is not known in advance
/// (a streamed folder walk): bytes so far and the rate.
pub fn count_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(None, draw_target());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {msg}, {bytes} {binary_bytes_per_sec}")
    {
        bar.set_style(style);
    }
    bar
}

/// Transfers at least this large get a progress bar of their own.
pub const LARGE_TRANSFER: u64 = 16 << 20;

/// `ferry completions SHELL`: the script on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<(), CommandError> {
    use clap::CommandFactory;
    let mut cmd = crate::args::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ferry", &mut out);
    write_stdout(&out)
}

/// `ferry man`: the manual page (roff) on standard output.
pub fn man() -> Result<(), CommandError> {
    use clap::CommandFactory;
    let cmd = crate::args::Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut out)
        .context("rendering the manual page")?;
    // The subcommand list names pages (`ferry-init(1)`) that are not
    // shipped: name the commands instead, and where their help is.
    let mut page = String::from_utf8_lossy(&out).into_owned();
    // (`help` is clap's own, added when the page is rendered.)
    let names = cmd.get_subcommands().map(|s| s.get_name()).chain(["help"]);
    for name in names {
        let name = name.replace('-', "\\-");
        page = page.replace(&format!("ferry\\-{name}(1)"), &format!("ferry {name}"));
    }
    page.push_str(".SH \"SEE ALSO\"\n`ferry help COMMAND` (or `ferry COMMAND \\-\\-help`) describes each command and its options.\n");
    write_stdout(page.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CommandError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing output")?;
    Ok(())
}

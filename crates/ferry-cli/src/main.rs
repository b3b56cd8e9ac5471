//! The `ferry` command: a thin front end over the `ferry` library.
//!
//! All user interaction lives here: argument parsing, finding the bucket,
//! progress bars, output formats, and mapping library errors to messages,
//! hints and exit codes (`command_error`).

/// Writes a line to stdout. A closed pipe (`ferry status | head -1`) is an
/// `io::Error` that ends the command quietly with exit 0 (see
/// `command_error`), never a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| $crate::command_error::CommandError::from(anyhow::Error::new(e)))?
    }};
}

mod access_keys;
mod args;
mod command_error;
mod config;
mod live;
mod locate;
mod objects;
mod output;
mod passphrase;
mod serve;
mod syncing;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::command_error::{report, CommandError};

fn main() -> ExitCode {
    // Before anything else, while this is the only thread.
    passphrase::take_from_env();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.global.verbose);
    if cli.global.progress {
        output::force_progress();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&CommandError::from(anyhow::Error::new(e))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Logs on stderr: `RUST_LOG` when set, else `-v` (debug) / `-vv` (trace)
/// for ferry's own targets, else warnings only. The S3 server library
/// under `ferry serve` (s3s) logs every refused request as an error with
/// its raw debug form (`S3Error(Inner {…})`); a refusal is the client's
/// answer, not the server's problem, so its logs show only with `-vv`.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(match verbose {
            0 => "warn,s3s=off",
            1 => "warn,ferry=debug,s3s=off",
            _ => "warn,ferry=trace,s3s=debug",
        }),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), CommandError> {
    let global = cli.global;
    match cli.command {
        Command::Init(a) => objects::init(&global, a).await,
        Command::Put(a) => objects::put(&global, a).await,
        Command::Get(a) => objects::get(&global, a).await,
        Command::Cat(a) => objects::cat(&global, a).await,
        Command::Ls(a) => objects::ls(&global, a).await,
        Command::Stat(a) => objects::stat(&global, a).await,
        Command::Rm(a) => objects::rm(&global, a).await,
        Command::Cp(a) => transfer::cp(&global, a).await,
        Command::Remote(a) => syncing::remote(&global, a).await,
        Command::Sync(a) => syncing::sync(&global, a, ferry::SyncMode::Both).await,
        Command::Push(a) => syncing::sync(&global, a, ferry::SyncMode::Push).await,
        Command::Pull(a) => syncing::sync(&global, a, ferry::SyncMode::Pull).await,
        Command::Status(a) => syncing::status(&global, a).await,
        Command::Conflicts(a) => syncing::conflicts(&global, a).await,
        Command::Resolve(a) => syncing::resolve(&global, a).await,
        Command::Scope(a) => syncing::scope(&global, a).await,
        Command::Watch(a) => live::watch(&global, a).await,
        Command::Serve(a) => serve::serve(&global, a).await,
        Command::Pin(a) => live::pin(&global, a, true).await,
        Command::Unpin(a) => live::pin(&global, a, false).await,
        Command::Cache(a) => live::cache(&global, a).await,
        Command::Destroy(a) => live::destroy(&global, a).await,
        Command::Passwd(a) => live::passwd(&global, a).await,
        Command::Rekey(a) => live::rekey(&global, a).await,
        Command::Rejoin(a) => live::rejoin(&global, a).await,
        Command::Du(a) => objects::du(&global, a).await,
        Command::Check(a) => objects::check(&global, a).await,
        Command::Mv(a) => objects::mv(&global, a).await,
        Command::Diff(a) => syncing::diff(&global, a).await,
        Command::Config(a) => live::config(&global, a).await,
        Command::Completions(a) => output::completions(a.shell),
        Command::Man => output::man(),
    }
}

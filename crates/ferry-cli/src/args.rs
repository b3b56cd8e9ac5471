//! Command-line arguments (clap derive).

use std::path::PathBuf;

use crate::command_error::CommandError;

use clap::{Args, Parser, Subcommand};

/// Local-first object storage.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The bucket directory (default: $FERRY_BUCKET, then `.ferry` in this
    /// directory or the nearest parent that has one).
    #[arg(long, global = true, value_name = "DIR", env = "FERRY_BUCKET")]
    pub bucket: Option<PathBuf>,
    /// Print no progress bars or confirmations.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Show progress (bytes, rate, ETA) even when stderr is not a
    /// terminal: one plain line per second, for logs.
    #[arg(long, global = true, conflicts_with = "quiet")]
    pub progress: bool,
    /// Log to stderr: -v each remote request with its timing, -vv also
    /// each decision of the planner. RUST_LOG (e.g. `ferry=debug`)
    /// overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read an encrypted bucket's passphrase from the first line of FILE
    /// (default: $FERRY_PASSPHRASE, then a prompt on a terminal).
    #[arg(long, global = true, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Run CMD (with `sh -c`) and take the first line it prints as the
    /// passphrase: a password manager (`pass show ferry`, `op read …`).
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        conflicts_with = "passphrase_file"
    )]
    pub passphrase_command: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a bucket (default: `./.ferry`).
    Init(InitArgs),
    /// Store a file (or standard input) under a key.
    Put(PutArgs),
    /// Write an object to a file or standard output.
    Get(GetArgs),
    /// Write objects to standard output.
    Cat(CatArgs),
    /// List objects.
    Ls(LsArgs),
    /// Show an object's metadata.
    Stat(StatArgs),
    /// Delete objects.
    Rm(RmArgs),
    /// Copy files and folders in (`cp -r DIR PREFIX`) or out (`cp -r ferry:PREFIX DIR`).
    Cp(CpArgs),
    /// Show or change the remote.
    Remote(RemoteArgs),
    /// Push local changes and pull remote ones.
    Sync(SyncArgs),
    /// Push local changes only.
    Push(SyncArgs),
    /// Pull remote changes only.
    Pull(SyncArgs),
    /// Count objects per sync state.
    Status(StatusArgs),
    /// List keys in conflict.
    Conflicts(ConflictsArgs),
    /// Settle a conflict.
    Resolve(ResolveArgs),
    /// Show or change which prefixes sync.
    Scope(ScopeArgs),
    /// Run the background sync engine and print its events until Ctrl-C (-q: none).
    Watch(WatchArgs),
    /// Serve the bucket as a local S3 endpoint until Ctrl-C (aws-cli, boto3, SDKs).
    ///
    /// Clients sign with FERRY_SERVE_ACCESS_KEY_ID / FERRY_SERVE_SECRET_ACCESS_KEY,
    /// else the pair in ferry.toml's [serve], else a pair made and printed at
    /// the first `serve` (stored in the bucket directory); each app can get
    /// a key of its own, limited to its buckets (`ferry serve keys`). Every
    /// write is durable locally when acknowledged; `--watch` also syncs it.
    /// Plain HTTP unless --tls-cert and --tls-key are given.
    Serve(ServeArgs),
    /// Keep objects downloaded (never evicted, always pulled).
    Pin(KeysArgs),
    /// Undo `pin`.
    Unpin(KeysArgs),
    /// Show cache usage or evict synced content.
    Cache(CacheArgs),
    /// Stop syncing and, with --clear-local, delete the local data.
    Destroy(DestroyArgs),
    /// Change an encrypted bucket's passphrase (re-wraps its key; no data is rewritten).
    ///
    /// This is not a response to a leaked passphrase: whoever had the old
    /// passphrase and a copy of the old key file (from the remote or a
    /// backup) can still unwrap the same master key, and the data stays
    /// sealed under it. After a leak, run `ferry rekey`.
    Passwd(PasswdArgs),
    /// Replace an encrypted bucket's master key: every object re-sealed and
    /// re-pushed under a new key (the answer to a leaked passphrase or key).
    ///
    /// Syncs first and refuses while changes are unpushed, conflicts are
    /// open, a scope limits the sync, or another process has the bucket
    /// open. The new bucket is built beside this one (as much disk again as
    /// its content) and swapped in at the end; if it is interrupted, run it
    /// again with the same two passphrases to go on. The new key is wrapped
    /// under a NEW passphrase ($FERRY_NEW_PASSPHRASE, --new-passphrase-file,
    /// or asked twice at a terminal; the current one is refused). Other
    /// devices join again afterwards with the new passphrase (`ferry
    /// rejoin` in their bucket): the old key no longer opens the remote.
    Rekey(RekeyArgs),
    /// Join the remote again after another device rekeyed it.
    ///
    /// Joins under the remote's new key (its passphrase from
    /// --new-passphrase-file, $FERRY_NEW_PASSPHRASE, or asked at a
    /// terminal; this bucket's own passphrase unlocks its data as usual)
    /// and carries this bucket's unpushed edits and deletes over: an edit
    /// of the version the remote still holds goes over it, an edit of a
    /// version someone replaced since is kept beside it as a conflict
    /// copy, a delete of a version replaced since is dropped. Built beside
    /// this bucket and swapped in at the end; if interrupted, run it again.
    Rejoin(RejoinArgs),
    /// Objects and bytes per folder under a prefix.
    Du(DuArgs),
    /// Verify the index and every local object's content against its hash (exit 1 on damage).
    Check(CheckArgs),
    /// Rename objects (no content is copied; syncs as a put and a delete).
    Mv(MvArgs),
    /// Show what differs between this bucket and its remote (exit 1 when something does).
    Diff(DiffArgs),
    /// Show the effective settings and where each comes from.
    Config(ConfigArgs),
    /// Print a shell completion script (`ferry completions bash > /etc/bash_completion.d/ferry`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff: `ferry man | man -l -`).
    Man,
}

/// `ferry diff [PREFIX]`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Only keys starting with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print JSON: an array of {key, kind, reason}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting with its value and source (user config
    /// `$XDG_CONFIG_HOME/ferry/config.toml`, the bucket's `ferry.toml`,
    /// environment, the bucket's index, default); secrets are hidden.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ferry check [PREFIX]`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Only keys starting with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also compare with the remote: what differs (as `ferry diff`), and
    /// whether each synced object's remote copy still carries the agreed
    /// content hash.
    #[arg(long)]
    pub remote: bool,
    /// Repair what can be: damaged objects that are on the remote are
    /// downloaded again, the index's indexes are rebuilt; the rest is
    /// named with the reason.
    #[arg(long)]
    pub repair: bool,
}

/// `ferry du [PREFIX]`.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// Only keys under this folder (`photos` means `photos/`; empty: all).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `ferry mv SRC DST`.
#[derive(Debug, Args)]
pub struct MvArgs {
    /// The key to rename (a folder with --recursive).
    pub source: String,
    /// The new key (the new folder with --recursive).
    pub dest: String,
    /// Rename every object under the folder SOURCE to the same name under DEST.
    #[arg(long, short)]
    pub recursive: bool,
    /// Replace objects that already exist at the new names.
    #[arg(long, short)]
    pub force: bool,
}

/// `ferry completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Argon2id cost of a new passphrase (and, joining an encrypted remote,
/// what this device affords: a key file asking for more than 8× its work
/// is refused before any work).
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Argon2id memory in MiB (19 to 1024; 64 or more recommended).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub kdf_memory: u32,
    /// Argon2id passes (2 to 16).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub kdf_passes: u32,
}

impl KdfArgs {
    /// The cost, checked as the library checks every new wrapping (floor
    /// 19 MiB and 2 passes, ceiling 1 GiB and 16 passes): a cost the bucket
    /// could never be unlocked with is refused before anything happens.
    pub fn params(&self) -> Result<ferry::KdfParams, CommandError> {
        let params = ferry::KdfParams {
            m_kib: self.kdf_memory.saturating_mul(1024),
            t: self.kdf_passes,
            p: 1,
        };
        params.check_new().map_err(|e| {
            CommandError::usage(format!(
                "{e}; --kdf-memory takes {} to {} (MiB), --kdf-passes {} to {}",
                ferry::KdfParams::MIN_MEMORY_KIB / 1024,
                ferry::KdfParams::MAX_MEMORY_KIB / 1024,
                ferry::KdfParams::MIN_PASSES,
                ferry::KdfParams::MAX_PASSES
            ))
        })?;
        Ok(params)
    }
}

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the new passphrase from the first line of FILE
    /// (default: $FERRY_NEW_PASSPHRASE, then asked twice at a terminal).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct RejoinArgs {
    /// Read the rekeyed remote's passphrase from the first line of FILE
    /// (default: $FERRY_NEW_PASSPHRASE, then asked at a terminal).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// The result as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Read the new passphrase from the first line of FILE
    /// (default: $FERRY_NEW_PASSPHRASE, then asked twice at a terminal).
    #[arg(long, value_name = "FILE")]
    pub new_passphrase_file: Option<PathBuf>,
    /// The result as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Serve every ferry bucket under DIR by its directory name (CreateBucket
    /// makes new ones there, DeleteBucket removes empty ones).
    #[arg(long, value_name = "DIR")]
    pub buckets: Option<std::path::PathBuf>,
    /// The S3 name of the bucket (default: its directory's name).
    #[arg(long, conflicts_with = "buckets")]
    pub name: Option<String>,
    /// Also run the sync engine in this process (as `ferry watch` does).
    #[arg(long)]
    pub watch: bool,
    /// Allow unsigned GET, HEAD and listings of everything.
    #[arg(long)]
    pub anonymous_read: bool,
    /// Allow unsigned GET and HEAD of keys under PREFIX (`BUCKET/PREFIX`, or
    /// a key prefix of the one served bucket); repeatable.
    #[arg(long, value_name = "PREFIX")]
    pub public_read: Vec<String>,
    /// Answer CORS requests from ORIGIN (`*`: any); repeatable.
    #[arg(long, value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Serve the app endpoints (URL signer, status, events) under BASE, as
    /// `BASE/health` and `BASE/v1/...`; callers present a bearer token from
    /// ferry.toml's [serve.tokens.NAME].
    #[arg(long, value_name = "BASE")]
    pub signer_base: Option<String>,
    /// Where signed URLs point: `local` (this gateway, works offline) or
    /// `upstream` (the bucket's S3 remote).
    #[arg(long, default_value = "local", value_parser = ["local", "upstream"])]
    pub signer_target: String,
    /// Answer requests naming this host (`Host`) beside IP addresses and
    /// localhost, the default (a browser reaching the gateway through
    /// another name is refused: DNS rebinding); `*`: any; repeatable.
    #[arg(long, value_name = "HOST")]
    pub allowed_host: Vec<String>,
    /// Remove a multipart upload no part was sent to for this long
    /// (`90m`, `24h`, `7d`).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub upload_max_age: std::time::Duration,
    /// The parts of a bucket's multipart uploads in progress hold at most
    /// this many GiB (a part past it is refused).
    #[arg(long, value_name = "GIB", default_value_t = 64)]
    pub upload_max_gib: u64,
    /// Serve HTTPS with the certificate chain in this PEM file (the
    /// server's certificate first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Manage the apps' access keys: each reaches only its buckets, to read
    /// or to read and write (the owner's pair keeps full access).
    Keys(ServeKeysArgs),
}

/// `ferry serve keys`.
#[derive(Debug, Args)]
pub struct ServeKeysArgs {
    #[command(subcommand)]
    pub command: ServeKeysCommand,
    /// The keys of `ferry serve --buckets DIR` (default: the bucket's).
    #[arg(long, value_name = "DIR")]
    pub buckets: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ServeKeysCommand {
    /// Make a key for an app and print its secret (shown only this once).
    ///
    /// It is stored in serve-keys.json (mode 0600) beside the owner's pair;
    /// a running `ferry serve` accepts it at once. Keys can also be written
    /// by hand as [serve.keys.NAME] in ferry.toml (access_key_id,
    /// secret_access_key, buckets = [...], access = "read" | "write").
    Add {
        /// The key's name (an app's: `web`, `backup-job`).
        name: String,
        /// The S3 names of the buckets it reaches.
        #[arg(required = true, value_name = "BUCKET")]
        buckets: Vec<String>,
        /// It may only read (GET, HEAD, listings); by default it also
        /// writes objects (never buckets).
        #[arg(long)]
        read_only: bool,
    },
    /// List the keys: names, access key ids, rights and buckets (no secrets).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key made with `add` (a running `ferry serve` refuses it at once).
    Rm {
        /// The key's name.
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// One JSON object per event per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Keys (folders with `--recursive`).
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Every object under each folder (`photos` means `photos/`).
    #[arg(long, short)]
    pub recursive: bool,
    /// With --recursive: match keys starting with the argument as a plain
    /// string (`photos` also matches `photos2/x` and `photos-old.txt`).
    #[arg(long, requires = "recursive")]
    pub prefix: bool,
}

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: Option<CacheCommand>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Bytes used against the limit (the default).
    Usage,
    /// Evict at least SIZE of synced, unpinned content (e.g. 10MiB).
    Evict {
        /// How much to free: bytes, or with a unit (KiB, MiB, GiB, KB, MB, GB).
        size: String,
    },
}

#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Also delete the bucket's local data.
    #[arg(long)]
    pub clear_local: bool,
    /// Do not ask for confirmation (needed when not on a terminal).
    #[arg(long, short)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Show the remote.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the remote (checks that it answers first).
    Set {
        /// `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`, `az://ACCOUNT/CONTAINER[/PREFIX]`, `webdav://HOST[:PORT]/PATH` (`webdavs://` for HTTPS), `signer+https://HOST/BASE` (a URL signer, `signer+http://` on loopback or with --insecure) or `file:///ABS/PATH`.
        url: String,
        /// Endpoint URL: an S3-compatible store (default: $AWS_ENDPOINT_URL, then AWS) a GCS emulator (default: $STORAGE_EMULATOR_HOST, then Google) or an Azure blob service (default: the BlobEndpoint of $AZURE_STORAGE_CONNECTION_STRING, then https://ACCOUNT.blob.core.windows.net).
        #[arg(long)]
        endpoint: Option<String>,
        /// S3 region (default: $AWS_REGION, then us-east-1).
        #[arg(long)]
        region: Option<String>,
        /// Path-style S3 addressing (needed by most self-hosted stores).
        #[arg(long)]
        path_style: bool,
        /// Accept a URL signer over plain HTTP (`signer+http://`) at a host
        /// that is not this machine: its bearer token and the data travel
        /// in the clear (refused without this).
        #[arg(long)]
        insecure: bool,
        /// Switch to a different remote without asking (what was agreed
        /// with the old one is forgotten).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Accept a remote that holds objects and no key file, in the clear
        /// (an encrypted remote whose .ferry/key.json was deleted looks the
        /// same).
        #[arg(long)]
        plaintext: bool,
    },
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on past the delete limit (`max_delete`). A remote that lists
    /// nothing where objects were synced takes --restore-remote or
    /// --accept-remote-deletes instead.
    #[arg(long)]
    pub force: bool,
    /// Put this device's copy back on the remote where the remote lost
    /// objects that were synced (a wiped or recreated bucket, a restored
    /// backup): they are uploaded again, nothing is deleted here.
    #[arg(long, conflicts_with = "accept_remote_deletes")]
    pub restore_remote: bool,
    /// Take a remote that lists nothing where objects were synced as
    /// emptied on purpose: delete those objects here too. Says how many and
    /// asks first (at a terminal; elsewhere pass --yes).
    #[arg(long)]
    pub accept_remote_deletes: bool,
    /// With --accept-remote-deletes: do not ask.
    #[arg(long, requires = "accept_remote_deletes")]
    pub yes: bool,
    /// Retry now the keys whose last push failed (parked failures too).
    #[arg(long)]
    pub retry: bool,
    /// List the whole remote instead of reading the change journal: finds
    /// what tools other than ferry wrote (runs by itself every
    /// `full_sync_interval_secs`).
    #[arg(long)]
    pub full: bool,
    /// Most deletes this run may make on either side: a count (1000) or a
    /// share of the synced objects (50%, the default, applies above 100).
    #[arg(long, value_name = "N|P%", value_parser = parse_delete_limit)]
    pub max_delete: Option<ferry::DeleteLimit>,
    /// Print the run's result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Include and exclude rules, in rclone's filter syntax.
#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Only keys matching this glob (repeatable; rclone syntax: `*` within
    /// a folder, `**` across folders, a leading `/` anchors at the root,
    /// a trailing `/` names folders).
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub include: Vec<String>,
    /// Leave out keys matching this glob (repeatable).
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub exclude: Vec<String>,
    /// A rule: `+ GLOB` includes, `- GLOB` excludes, `!` clears; the first
    /// rule that matches decides (repeatable).
    #[arg(
        long,
        value_name = "RULE",
        help_heading = "Filters",
        allow_hyphen_values = true
    )]
    pub filter: Vec<String>,
    /// Read rules from a file, one per line (`#` and `;` start comments).
    #[arg(long, value_name = "FILE", help_heading = "Filters")]
    pub filter_from: Vec<std::path::PathBuf>,
}

impl FilterArgs {
    /// True when no rule was given.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.filter.is_empty()
            && self.filter_from.is_empty()
    }

    /// The filter the flags describe (`None` without flags); a bad pattern
    /// or an unreadable rules file is a usage error naming it.
    pub fn build(&self) -> Result<Option<ferry::Filter>, CommandError> {
        if self.is_empty() {
            return Ok(None);
        }
        if !self.include.is_empty() && !self.exclude.is_empty() {
            // rclone warns the same way: the flags' order is not the order
            // written, and a surprise here copies or deletes the wrong keys.
            eprintln!(
                "warning: --include and --exclude are mixed: every --include rule is checked \
                 before any --exclude rule (rclone's order), so `--include '*.jpg' --exclude \
                 'tmp/'` still takes tmp/x.jpg. Use --filter rules ('- tmp/' then '+ *.jpg', \
                 first match wins) to say the order"
            );
        }
        let mut rules = self.filter.clone();
        for path in &self.filter_from {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CommandError::usage(format!("reading filter rules {}: {e}", path.display()))
            })?;
            rules.extend(ferry::Filter::file_lines(&text));
        }
        ferry::Filter::new(&self.include, &self.exclude, &rules)
            .map(Some)
            .map_err(|e| CommandError::usage(e.to_string()))
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConflictsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The key in conflict.
    pub key: String,
    /// keep-local, keep-remote or keep-both.
    #[arg(value_parser = ["keep-local", "keep-remote", "keep-both"])]
    pub resolution: String,
}

#[derive(Debug, Args)]
pub struct ScopeArgs {
    #[command(subcommand)]
    pub command: ScopeCommand,
}

#[derive(Debug, Subcommand)]
pub enum ScopeCommand {
    /// List the prefixes that sync, and the scope filter.
    Ls,
    /// Set the rules that narrow what syncs (replacing the current ones):
    /// excluded objects stay here as orphans, newly included ones are
    /// pulled. Without rules: print the current ones.
    Filter {
        #[command(flatten)]
        filter: FilterArgs,
        /// Remove every rule (everything under the prefixes syncs).
        #[arg(long, conflicts_with_all = ["include", "exclude", "filter", "filter_from"])]
        clear: bool,
    },
    /// Sync this prefix too (pulls it at once).
    Add {
        /// Key prefix.
        prefix: String,
    },
    /// Stop syncing this prefix (its local objects stay, as orphans).
    Rm {
        /// Key prefix.
        prefix: String,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The bucket's data directory.
    #[arg(value_name = "DIR", default_value = ".ferry")]
    pub dir: PathBuf,
    /// The remote to sync with: `s3://BUCKET[/PREFIX]`, `gs://BUCKET[/PREFIX]`, `az://ACCOUNT/CONTAINER[/PREFIX]`, `webdav://HOST[:PORT]/PATH` (`webdavs://` for HTTPS), `signer+https://HOST/BASE` (a URL signer, `signer+http://` on loopback or with --insecure), `file:///ABS/PATH`.
    #[arg(long)]
    pub remote: Option<String>,
    /// Endpoint URL: an S3-compatible store (default: $AWS_ENDPOINT_URL, then AWS) a GCS emulator (default: $STORAGE_EMULATOR_HOST, then Google) or an Azure blob service (default: the BlobEndpoint of $AZURE_STORAGE_CONNECTION_STRING, then https://ACCOUNT.blob.core.windows.net).
    #[arg(long, requires = "remote")]
    pub endpoint: Option<String>,
    /// S3 region (default: $AWS_REGION, then us-east-1).
    #[arg(long, requires = "remote")]
    pub region: Option<String>,
    /// Path-style S3 addressing (needed by most self-hosted stores).
    #[arg(long, requires = "remote")]
    pub path_style: bool,
    /// Accept a URL signer over plain HTTP (`signer+http://`) at a host
    /// that is not this machine: its bearer token and the data travel in
    /// the clear (refused without this).
    #[arg(long, requires = "remote")]
    pub insecure: bool,
    /// Encrypt end to end: a random key wrapped under a passphrase
    /// (asked twice, or $FERRY_PASSPHRASE / --passphrase-file). Not needed
    /// to join an encrypted remote: that is detected.
    #[arg(long)]
    pub encrypt: bool,
    /// Join a remote that already holds objects and no key file, in the
    /// clear. Asked for because an encrypted remote whose .ferry/key.json
    /// was deleted looks the same.
    #[arg(long, requires = "remote", conflicts_with = "encrypt")]
    pub plaintext: bool,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// The object's key.
    pub key: String,
    /// The file to store; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
    /// Content type (default: guessed from the key's extension).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// User metadata, repeatable.
    #[arg(long = "meta", value_name = "NAME=VALUE")]
    pub meta: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The object's key.
    pub key: String,
    /// Where to write it; `-` or nothing writes standard output.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// Keys to print, in order.
    #[arg(required = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only keys starting with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Show size, modification time, state and content type.
    #[arg(long, short)]
    pub long: bool,
    /// Group keys by `/` after the prefix, like folders.
    #[arg(long, short)]
    pub dirs: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// The object's key.
    pub key: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Keys to delete (prefixes with `--recursive`).
    #[arg(required = true)]
    pub keys: Vec<String>,
    /// Delete every object under each folder (`photos` means `photos/`).
    #[arg(long, short)]
    pub recursive: bool,
    /// With --recursive: match keys starting with the argument as a plain
    /// string (`photos` also matches `photos2/x` and `photos-old.txt`).
    #[arg(long, requires = "recursive")]
    pub prefix: bool,
    /// Do not fail on keys that do not exist.
    #[arg(long, short)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Copy folders recursively (`ferry:photos` means `ferry:photos/`).
    #[arg(long, short)]
    pub recursive: bool,
    /// With --recursive from the bucket: match keys starting with the
    /// source as a plain string prefix instead of a folder.
    #[arg(long, requires = "recursive")]
    pub prefix: bool,
    /// Importing a folder: follow symbolic links and copy what they point
    /// to (as rsync -L and rclone -L do). Without it each link is skipped
    /// and named.
    #[arg(long = "copy-links", short = 'L')]
    pub copy_links: bool,
    /// Source: a local path, or `ferry:KEY` / `ferry:PREFIX`.
    pub source: String,
    /// Destination: a local path, or `ferry:KEY` / `ferry:PREFIX` (a bare
    /// destination is a key prefix when the source is local).
    pub dest: String,
    /// With --recursive: rules over paths relative to the source.
    #[command(flatten)]
    pub filter: FilterArgs,
}

fn parse_delete_limit(s: &str) -> Result<ferry::DeleteLimit, String> {
    s.parse()
}

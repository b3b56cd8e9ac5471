//! One sync run, in windows: the planner's inputs are gathered a window of
//! keys at a time (a merge of the index, read in key order, with the remote
//! listing, spilled and read back in key order, or with the keys the
//! journal names), each window is planned by the pure planner and its
//! actions go to a bounded queue of tasks. Memory holds a window and the
//! tasks in flight, never the whole bucket.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::meter::Meter;
use super::spill::Spill;
use super::{
    annotate, issue, Done, ProgressFn, SyncIssue, SyncMode, SyncOptions, SyncReport,
    NOTHING_IN_SCOPE,
};
use crate::bucket::Bucket;
use crate::crypto::keyring::Keyring;
use crate::error::{Error, Result};
use crate::key::{validate_key, RESERVED_PREFIX};
use crate::remote::encrypted::UNREADABLE_NAME;
use crate::remote::{RemoteError, RemoteObject, SharedRemote};
use crate::store::index;
use crate::store::record::SyncRecord;
use crate::sync::journal;
use crate::sync::plan::{self, Action, ConflictPolicy, LocalEntry, Policy};

/// Keys per planning window, by default ([`super::SyncConfig::window_keys`]).
pub(crate) const WINDOW: usize = 1000;

/// A journal tail naming more keys than this is read as a full reconcile
/// (the keys would otherwise be held in memory at once).
const JOURNAL_KEYS_MAX: usize = 100_000;

/// Where a run's remote side comes from.
enum Gather {
    /// A full reconcile: the whole listing, spilled.
    Full(Spill),
    /// The keys the journal names (other writers' changes since we read
    /// it): the run's `changed` set.
    Journal,
}

/// One window of keys: the local rows and the remote objects in it.
struct Window {
    local: Vec<LocalEntry>,
    listing: BTreeMap<String, RemoteObject>,
    /// The window's last key; `None` when it was the last window.
    bound: Option<String>,
}

/// Keeps `rows` (sorted by key) at or below `bound`.
fn clip<T>(rows: &mut Vec<T>, bound: Option<&str>, key: impl Fn(&T) -> &str) {
    if let Some(b) = bound {
        let keep = rows.partition_point(|r| key(r) <= b);
        rows.truncate(keep);
    }
}

/// The smallest last key among the pages that came back full (their
/// source may hold more): the window ends there.
fn window_bound<'a>(
    limit: usize,
    pages: impl IntoIterator<Item = (usize, Option<&'a str>)>,
) -> Option<String> {
    pages
        .into_iter()
        .filter(|(len, _)| *len >= limit)
        .filter_map(|(_, last)| last)
        .min()
        .map(str::to_owned)
}

/// What the journal says of deletions, for `plan::unproven_delete`, and
/// which keys its new records name.
struct Deletions<'a> {
    proofs: &'a HashMap<String, Vec<plan::DeleteProof>>,
    /// Keys other writers' new records name (empty when too many).
    named: &'a BTreeSet<String>,
    /// Per key, the versions other writers' new put records say they
    /// replaced (`plan::unseen_overwrite`).
    bases: &'a HashMap<String, Vec<String>>,
    /// An encrypted bucket.
    sealed: bool,
    /// The store ignores conditional deletes (ferry checks by HEAD).
    emulated: bool,
    /// The store ignores conditional puts (ferry checks by HEAD).
    emulated_put: bool,
}

impl Deletions<'_> {
    /// The deletes of `key` the new records name.
    fn proofs_of(&self, key: &str) -> &[plan::DeleteProof] {
        self.proofs.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The versions the new put records of `key` say they replaced.
    fn bases_of(&self, key: &str) -> &[String] {
        self.bases.get(key).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The issue a run reports when a device's journal stream was rewritten
/// below what this replica read (it lists the whole store instead).
fn rewritten(endpoint: &str, device: &str, detail: &str) -> SyncIssue {
    SyncIssue {
        key: String::new(),
        cause: format!(
            "the change journal of device {device} at {endpoint} was rewritten ({detail}); \
             this run listed the whole store instead. If the store was not restored from a \
             backup, someone with write access to it changed ferry's records"
        ),
        retryable: false,
    }
}

/// Failures without an answer from the remote, in a row with no success
/// between them, after which a run takes the remote as down and stops.
const NO_ANSWER_IN_A_ROW: usize = 3;

/// The bounded queue of running actions: at most `in_flight` tasks, each
/// kind (push side, pull side) limited by its own semaphore.
///
/// A remote that stops answering stops the run: after
/// [`NO_ANSWER_IN_A_ROW`] such failures with no success between them the
/// queue is aborted, nothing more is queued, and the actions not done are
/// counted (`left`) instead of each reported with the same cause.
struct Runner {
    tasks: JoinSet<(String, bool, Done)>,
    in_flight: usize,
    push_limit: Arc<Semaphore>,
    pull_limit: Arc<Semaphore>,
    policy: ConflictPolicy,
    /// Actions and bytes planned and done, told to the caller.
    meter: Arc<Meter>,
    /// A remote change the run was to bring here failed: the journal
    /// position must not pass it.
    unapplied: bool,
    /// No-answer failures since the last success (held back from the report
    /// until it is known whether the remote is down).
    no_answer: Vec<SyncIssue>,
    /// Set once the remote is taken as down: the first cause.
    down: Option<String>,
    /// Actions not done because the remote was down.
    left: u64,
    /// No-answer failures in a row as the tasks finish them (tasks check it
    /// before they start, so the queue stops at once).
    streak: Arc<AtomicUsize>,
}

impl Runner {
    /// Queues `action`, which moves `size` bytes (an upload or a download;
    /// 0 for the rest), waiting for room first.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &mut self,
        bucket: &Bucket,
        remote: &SharedRemote,
        action: Action,
        size: u64,
        seen: Option<RemoteObject>,
        expect: plan::Expect,
        report: &mut SyncReport,
    ) {
        while self.tasks.len() >= self.in_flight && self.down.is_none() {
            self.join_one(bucket, report).await;
        }
        if self.down.is_some() {
            self.left += 1;
            return;
        }
        let me = bucket.clone();
        let remote = remote.clone();
        let limit = if action.is_push_side() {
            self.push_limit.clone()
        } else {
            self.pull_limit.clone()
        };
        let policy = self.policy;
        let streak = self.streak.clone();
        let transfer = self.meter.transfer(size);
        self.tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let key = action.key().to_owned();
            let pull_side = !action.is_push_side();
            // Queued behind a remote that stopped answering: not tried.
            if streak.load(Ordering::SeqCst) >= NO_ANSWER_IN_A_ROW {
                return (key, pull_side, Done::NotTried);
            }
            let progress = transfer.progress();
            let done = me
                .execute(&remote, action, seen, expect, policy, &progress)
                .await;
            transfer.end();
            match &done {
                Done::NoAnswer(_) => {
                    streak.fetch_add(1, Ordering::SeqCst);
                }
                Done::Failed(_) | Done::NotTried => {}
                _ => streak.store(0, Ordering::SeqCst),
            }
            (key, pull_side, done)
        });
    }

    /// Waits for one action and counts its outcome; false when none runs.
    async fn join_one(&mut self, bucket: &Bucket, report: &mut SyncReport) -> bool {
        let Some(joined) = self.tasks.join_next().await else {
            return false;
        };
        self.meter.finished();
        let answered = !matches!(joined, Ok((_, _, Done::NoAnswer(_) | Done::NotTried)));
        if answered && self.down.is_none() {
            report.errors.append(&mut self.no_answer);
        }
        if self.down.is_some() && !matches!(joined, Ok((_, _, ref d)) if d.did_something()) {
            // Aborted, or failed the same way: left for the next run.
            self.left += 1;
            return true;
        }
        match joined {
            Ok((key, _, Done::Pushed)) => {
                report.pushed += 1;
                bucket.emit(crate::engine::events::Event::ObjectPushed { key });
            }
            Ok((key, _, Done::Pulled)) => {
                report.pulled += 1;
                bucket.emit(crate::engine::events::Event::ObjectPulled { key });
            }
            Ok((_, _, Done::DeletedRemote)) => report.deleted_remote += 1,
            Ok((_, _, Done::DeletedLocal)) => report.deleted_local += 1,
            Ok((key, _, Done::Conflict(c))) => {
                report.conflicts.push(c);
                bucket.emit(crate::engine::events::Event::ObjectConflict { key });
            }
            Ok((_, _, Done::Nothing)) => {}
            Ok((_, pull_side, Done::Failed(i))) => {
                self.unapplied |= pull_side;
                report.errors.push(i);
            }
            Ok((_, _, Done::NoAnswer(i))) => {
                self.unapplied = true;
                self.no_answer.push(i);
                if self.streak.load(Ordering::SeqCst) >= NO_ANSWER_IN_A_ROW {
                    self.take_down();
                }
            }
            Ok((_, _, Done::NotTried)) => {
                self.unapplied = true;
                self.left += 1;
                self.take_down();
            }
            Err(e) => {
                self.unapplied = true;
                report.errors.push(SyncIssue {
                    key: String::new(),
                    cause: format!("sync task failed: {e}"),
                    retryable: true,
                })
            }
        }
        true
    }

    /// The remote is down: the failures held back count as left, and the
    /// queued actions (which would each wait for the time limit) are aborted.
    fn take_down(&mut self) {
        if self.down.is_some() {
            return;
        }
        self.down = Some(
            self.no_answer
                .first()
                .map(|i| i.cause.clone())
                .unwrap_or_else(|| "no answer".to_owned()),
        );
        self.left += self.no_answer.len() as u64;
        self.no_answer.clear();
        self.tasks.abort_all();
    }

    /// Waits for every queued action.
    async fn drain(&mut self, bucket: &Bucket, report: &mut SyncReport) {
        while self.join_one(bucket, report).await {}
        report.errors.append(&mut self.no_answer);
    }

    /// `Error::RemoteDown` once the remote was taken as down.
    fn stopped(&self, remote: &SharedRemote) -> Result<()> {
        match &self.down {
            Some(cause) => Err(Error::RemoteDown {
                remote: remote.endpoint(),
                cause: cause.clone(),
                left: self.left,
            }),
            None => Ok(()),
        }
    }
}

impl Bucket {
    /// One run, in this process (the caller holds leadership).
    pub(crate) async fn run_sync(
        &self,
        opts: SyncOptions,
        progress: Option<ProgressFn>,
    ) -> Result<SyncReport> {
        if !opts.dry_run {
            self.emit(crate::engine::events::Event::SyncStarted);
        }
        let dry_run = opts.dry_run;
        let result = self.run_sync_with(opts, progress, None).await;
        if !dry_run {
            match &result {
                Ok(r) => self.emit(crate::engine::events::Event::SyncCompleted {
                    result: crate::engine::events::SyncSummary::of(r),
                }),
                Err(e) => self.emit(crate::engine::events::Event::SyncFailed {
                    error: e.to_string(),
                }),
            }
        }
        result
    }

    /// One run under `policy` (default: the configured one).
    pub(super) async fn run_sync_with(
        &self,
        opts: SyncOptions,
        progress: Option<ProgressFn>,
        policy: Option<Policy>,
    ) -> Result<SyncReport> {
        if !opts.dry_run {
            self.writable()?;
        }
        let _one_at_a_time = self.inner.sync_lock.lock().await;
        let keys = self.keyring()?;
        let started = Instant::now();
        let remote = self.connected_remote()?;
        let config = self.sync_config()?;
        let policy = policy.unwrap_or(Policy {
            direction: config.direction,
            conflict: config.conflict,
            strategy: config.strategy,
        });
        let scope = self.effective_scope()?;
        let mut report = SyncReport::default();

        // Attempts a crash left in flight go back to pending; uploads that
        // were interrupted are aborted on the store.
        if !opts.dry_run {
            let path = self.inner.index_path.clone();
            let interrupted = tokio::task::spawn_blocking(move || -> Result<usize> {
                let conn = index::open(&path, false)?;
                let n = conn.execute(
                    "UPDATE outbox SET state = 'pending' WHERE state = 'inflight'",
                    [],
                )?;
                let failed: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM outbox WHERE state = 'failed'",
                    [],
                    |r| r.get(0),
                )?;
                Ok(n + failed as usize)
            })
            .await
            .map_err(|e| Error::task("outbox task", e))??;
            if interrupted > 0 {
                if let Err(e) = remote.cleanup(self.device_id()).await {
                    report.errors.push(SyncIssue {
                        key: String::new(),
                        cause: format!("aborting interrupted uploads: {e}"),
                        retryable: e.is_retryable(),
                    });
                }
            }
        }

        // 1. The journal: what other ferry writers changed since this
        // replica last read their streams. A full reconcile (the whole
        // listing) when it is due: at first, on schedule, when asked, when
        // the history is gone or was rewritten, or when the journal names
        // too many keys to hold.
        let raw = self.raw_remote()?;
        let endpoint = remote.endpoint();
        let mut jstate = self.journal_state(&endpoint)?;
        let streams = self.list_streams(&raw).await?;
        let started_ms = self.now_ms();
        let interval_ms =
            i64::try_from(config.full_sync_interval_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        // A remote whose last full listing was cheap (a few pages) is listed
        // in full when a person asks for a sync, and more often in the
        // background: other tools' writes show up without `--full`.
        let cheap = config.cheap_listing_pages > 0
            && jstate
                .full_pages
                .is_some_and(|p| p <= config.cheap_listing_pages);
        let cheap_interval_ms =
            i64::try_from(config.cheap_full_sync_interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX);
        let since_full = started_ms.saturating_sub(jstate.last_full_ms);
        let mut full = opts.full
            || opts.restore_remote
            || config.full_sync_interval_secs == 0
            || jstate.pos.is_none()
            || since_full >= interval_ms
            || (cheap && (opts.full_if_cheap || since_full >= cheap_interval_ms));
        let me = self.device_id().to_owned();
        // Where each stream will have been read to, once this run applied
        // what it names.
        let mut read: BTreeMap<String, super::StreamPos> = jstate.streams.clone();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        if !full {
            // A stream read before that is gone altogether (compaction
            // always keeps its newest records): its history is lost.
            if let Some(device) = jstate
                .streams
                .iter()
                .find(|(d, p)| **d != me && p.pos > 0 && !streams.contains_key(*d))
                .map(|(d, _)| d.clone())
            {
                full = true;
                report
                    .errors
                    .push(rewritten(&endpoint, &device, "its records are gone"));
            }
        }
        // Deletes the records name, with the version each deleter saw: a
        // deletion nothing proves never deletes local data where it
        // matters (`plan::unproven_delete`). A full reconcile reads the
        // records too, for these.
        let mut proofs: HashMap<String, Vec<plan::DeleteProof>> = HashMap::new();
        // Version stamp floors the delete records name (encrypted buckets).
        let mut floors: Vec<(String, u64)> = Vec::new();
        // Version stamps the put records name: a device wrote that version
        // after what this replica had read, so a stamp below the key's
        // floor (its writer never saw the newer version) is no rollback.
        let mut accepted: Vec<(String, u64)> = Vec::new();
        let mut bases: HashMap<String, Vec<String>> = HashMap::new();
        let mut keys_named = true;
        'streams: for (device, seqs) in streams.iter().filter(|(d, _)| **d != me) {
            let at = jstate.streams.get(device).copied().unwrap_or_default();
            let tail = journal::tail(Some(at.pos), seqs);
            let seqs = match tail {
                journal::Tail::Nothing => continue,
                journal::Tail::Read(seqs) => seqs,
                journal::Tail::Gap if full => {
                    seqs.iter().copied().filter(|s| *s > at.pos).collect()
                }
                journal::Tail::Gap => {
                    full = true;
                    if seqs.last().is_some_and(|n| *n < at.pos) {
                        // Rolled back below what was read: a rewrite, not
                        // compaction. The full listing says what is there.
                        report.errors.push(rewritten(
                            &endpoint,
                            device,
                            &format!(
                                "its newest record is {}, this replica read up to {}",
                                seqs.last().copied().unwrap_or(0),
                                at.pos
                            ),
                        ));
                    }
                    seqs.iter().copied().filter(|s| *s > at.pos).collect()
                }
            };
            let mut digest = at.digest;
            let mut pos = at.pos;
            for seq in seqs {
                let (record, d) = match self.read_record(&raw, device, seq, keys.as_deref()).await {
                    Ok(found) => found,
                    Err(Error::Remote(e))
                        if e.kind == crate::remote::RemoteErrorKind::Integrity =>
                    {
                        // A record that does not read as its slot's (moved,
                        // replayed, unlinked, not sealed by this bucket's
                        // key): the stream is not trusted past it.
                        self.check_remote_key(raw.as_ref()).await?;
                        full = true;
                        report.errors.push(rewritten(&endpoint, device, &e.detail));
                        break;
                    }
                    Err(e) => {
                        self.check_remote_key(raw.as_ref()).await?;
                        return Err(e);
                    }
                };
                if let (Some(want), Some(got)) = (digest, record.prev.as_deref()) {
                    if seq == pos + 1 && hex::encode(want) != got && !full {
                        full = true;
                        report.errors.push(rewritten(
                            &endpoint,
                            device,
                            &format!("record {seq} follows another record {pos} than the one this replica read (a fork)"),
                        ));
                    }
                }
                digest = Some(d);
                pos = seq;
                for e in record.entries {
                    if validate_key(&e.key).is_err() || !scope.contains(&e.key) {
                        continue;
                    }
                    match (&e.op, e.stamp) {
                        (journal::Op::Delete, Some(stamp)) => floors.push((e.key.clone(), stamp)),
                        (journal::Op::Put, Some(stamp)) if accepted.len() <= JOURNAL_KEYS_MAX => {
                            accepted.push((e.key.clone(), stamp))
                        }
                        _ => {}
                    }
                    if e.op == journal::Op::Delete {
                        proofs
                            .entry(e.key.clone())
                            .or_default()
                            .push(plan::DeleteProof {
                                etag: e.etag.clone(),
                                hash: e.hash.as_deref().and_then(|h| h.parse().ok()),
                                version: e.base.clone(),
                            });
                    }
                    if let (journal::Op::Put, Some(base)) = (&e.op, &e.base) {
                        if bases.len() <= JOURNAL_KEYS_MAX {
                            bases.entry(e.key.clone()).or_default().push(base.clone());
                        }
                    }
                    if keys_named {
                        changed.insert(e.key);
                    }
                }
                if changed.len() > JOURNAL_KEYS_MAX {
                    full = true;
                    keys_named = false;
                    changed.clear();
                }
                if proofs.len() > JOURNAL_KEYS_MAX {
                    // Too many to hold: deletions beyond are unproven.
                    break 'streams;
                }
            }
            read.insert(device.clone(), super::StreamPos { pos, digest });
        }
        if full {
            // A full reconcile reads the store as it is now: every stream
            // is read to its newest record as listed before it.
            read = streams
                .iter()
                .map(|(device, seqs)| {
                    let pos = seqs.last().copied().unwrap_or(0);
                    let known = jstate.streams.get(device).filter(|p| p.pos == pos);
                    let digest = known.and_then(|p| p.digest);
                    (device.clone(), super::StreamPos { pos, digest })
                })
                .collect();
            if let Some(own) = jstate.streams.get(&me) {
                read.entry(me.clone())
                    .and_modify(|p| {
                        if own.pos >= p.pos {
                            *p = *own;
                        }
                    })
                    .or_insert(*own);
            }
        }
        if !floors.is_empty() {
            // Before anything is pushed: a key created again here gets a
            // stamp past the version the deleter saw.
            self.record(SyncRecord::Stamps { batch: floors }).await?;
        }
        if !accepted.is_empty() {
            self.record(SyncRecord::AcceptedStamps { batch: accepted })
                .await?;
        }
        report.full = full;
        let mut restore = opts.restore_remote;
        let mut listed_pages: Option<u64> = None;
        if full {
            // A full listing of a remote rekeyed elsewhere would show only
            // names this key cannot read: say what happened instead.
            self.check_remote_key(raw.as_ref()).await?;
        }
        let gather = if full {
            let (spill, pages) = self
                .spill_listing(&remote, &scope.prefixes, keys.as_deref(), &mut report)
                .await?;
            listed_pages = Some(pages);
            // A remote that lists nothing where objects were synced (wiped,
            // wrong prefix, unmounted) deletes nothing, each scope on its
            // own: the caller chooses between putting the local copy back
            // and taking the deletes. A push never deletes here, so after a
            // wipe it puts back.
            if !opts.restore_remote && !opts.accept_remote_deletes {
                match self.check_scopes_listed(&spill, &scope.prefixes, &remote.endpoint()) {
                    Err(Error::EmptyRemote { .. }) if opts.mode == SyncMode::Push => {
                        restore = true;
                    }
                    other => other?,
                }
            }
            Gather::Full(spill)
        } else {
            Gather::Journal
        };
        // Keys whose last push failed, and when they may run again.
        let parked = self.parked()?;
        // Whether the store's deletes and puts are conditional only by our
        // HEAD.
        let probe = self
            .setting_json::<BTreeMap<String, crate::remote::emulated::ProbeResult>>("probes")?
            .and_then(|p| p.get(&endpoint).copied());
        let emulated = probe.is_some_and(|p| !p.conditional_delete);
        let emulated_put = probe.is_some_and(|p| p.racy_puts());
        let now = self.now_ms();

        // 2. Window by window: gather, plan, queue. Deletes wait until the
        // whole plan is known (the delete limit counts them all first).
        let mut runner = Runner {
            tasks: JoinSet::new(),
            // One upload and one download at a time means one action at a
            // time: the order the simulator replays (nothing else races).
            in_flight: match (config.push_concurrency, config.pull_concurrency) {
                (0 | 1, 0 | 1) => 1,
                (push, pull) => push + pull,
            },
            push_limit: Arc::new(Semaphore::new(config.push_concurrency.max(1))),
            pull_limit: Arc::new(Semaphore::new(config.pull_concurrency.max(1))),
            policy: config.conflict,
            meter: Meter::new(progress),
            unapplied: false,
            no_answer: Vec::new(),
            down: None,
            left: 0,
            streak: Arc::new(AtomicUsize::new(0)),
        };
        runner.meter.tell();
        let mut deletes: Vec<(Action, plan::Expect)> = Vec::new();
        // Whether the remote's key file was read in this run (encrypted
        // buckets, before the first write).
        let mut key_checked = false;
        let mut planned: Vec<Action> = Vec::new();
        let mut after: Option<String> = None;
        // Whether a push left out the remote's changes.
        let mut skipped = false;
        let size = config.window_keys.max(1);
        loop {
            let errors_before = report.errors.len();
            let window = match &gather {
                Gather::Full(spill) => self.full_window(spill, after.as_deref(), size)?,
                Gather::Journal => {
                    self.journal_window(
                        &remote,
                        &changed,
                        &parked,
                        after.as_deref(),
                        size,
                        keys.as_deref(),
                        config.pull_concurrency,
                        &mut report,
                    )
                    .await?
                }
            };
            let bound = window.bound.clone();
            // Restoring after a wipe puts every lost version back anyway.
            let deletes_seen = Deletions {
                proofs: &proofs,
                named: &changed,
                bases: &bases,
                sealed: keys.is_some() && !restore,
                emulated: emulated && !restore,
                emulated_put: emulated_put && !restore,
            };
            let actions = self
                .plan_window(
                    &remote,
                    window,
                    &scope,
                    policy,
                    keys.as_deref(),
                    config.pull_concurrency,
                    &deletes_seen,
                    &mut report,
                )
                .await?;
            // A key whose HEAD or content check failed was not planned: what
            // the journal said of it is not consumed.
            runner.unapplied |= report.errors[errors_before..].iter().any(|e| e.retryable);
            let mut window_actions: Vec<(Action, Option<RemoteObject>, plan::Expect)> = Vec::new();
            for (action, seen, expect) in actions {
                let action = if restore {
                    match self.restoring(action, &mut report)? {
                        Some(a) => a,
                        None => continue,
                    }
                } else {
                    action
                };
                if opts
                    .filter
                    .as_ref()
                    .is_some_and(|f| !f.matches(action.key()))
                {
                    continue;
                }
                let included = match opts.mode {
                    SyncMode::Both => true,
                    SyncMode::Push => !action.is_pull_side(),
                    SyncMode::Pull => !action.is_push_side(),
                };
                if !included {
                    // A remote change left for another run; also a restore
                    // to take back, which only a delete record read in this
                    // run asks for (a pull run does not delete remotely).
                    runner.unapplied |=
                        action.is_pull_side() || matches!(action, Action::Retract { .. });
                    skipped |= action.is_pull_side();
                    continue;
                }
                // Keys whose last push failed wait for their backoff
                // (terminal failures until the object changes or `retry`
                // is asked).
                if action.is_push_side()
                    && !opts.retry
                    && parked.get(action.key()).is_some_and(|next| *next > now)
                {
                    report.parked += 1;
                    continue;
                }
                if opts.dry_run {
                    planned.push(action);
                } else if matches!(
                    action,
                    Action::DeleteLocal { .. }
                        | Action::DeleteRemote { .. }
                        | Action::Retract { .. }
                ) {
                    deletes.push((action, expect));
                } else {
                    window_actions.push((action, seen, expect));
                }
            }
            if !opts.dry_run {
                if window_actions.iter().any(|(a, _, _)| a.is_push_side()) {
                    self.check_key_before_writing(
                        raw.as_ref(),
                        keys.is_some(),
                        &mut key_checked,
                        &mut runner,
                        &mut report,
                    )
                    .await?;
                }
                self.queue_window(&remote, &mut runner, window_actions, &mut report)
                    .await?;
            }
            if runner.down.is_some() {
                // What is not planned yet stays for the next run.
                break;
            }
            match bound {
                Some(b) => after = Some(b),
                None => break,
            }
        }
        drop(gather);
        if opts.dry_run {
            planned.sort_by(|a, b| a.key().cmp(b.key()));
            // The conflicts the plan would flag, and those already open.
            for action in &planned {
                if let Action::Conflict {
                    key,
                    reason,
                    remote_etag,
                } = action
                {
                    report.conflicts.push(super::ConflictInfo {
                        key: key.clone(),
                        reason: Some(*reason),
                        remote_etag: remote_etag.clone(),
                        deleted_locally: !self.exists(key).await?,
                    });
                }
            }
            let known: HashSet<String> = report.conflicts.iter().map(|c| c.key.clone()).collect();
            for c in self.conflicts().await? {
                if !known.contains(&c.key) {
                    report.conflicts.push(c);
                }
            }
            report.conflicts.sort_by(|a, b| a.key.cmp(&b.key));
            report.planned = planned;
            report.duration = started.elapsed();
            report.timestamp = Some(self.inner.clock.now());
            return Ok(report);
        }

        // 3. Deletes, once the limit allows them.
        if runner.down.is_some() {
            runner.left += deletes.len() as u64;
            deletes.clear();
        }
        if !deletes.is_empty() {
            if !opts.force {
                let limit = opts.max_delete.unwrap_or(config.max_delete);
                let actions: Vec<Action> = deletes.iter().map(|(a, _)| a.clone()).collect();
                if let Err(e) =
                    self.check_deletes(&actions, self.synced_count(&scope.prefixes)?, limit)
                {
                    runner.drain(self, &mut report).await;
                    return Err(e);
                }
            }
            if deletes.iter().any(|(a, _)| a.is_push_side()) {
                if let Err(e) = self
                    .check_key_before_writing(
                        raw.as_ref(),
                        keys.is_some(),
                        &mut key_checked,
                        &mut runner,
                        &mut report,
                    )
                    .await
                {
                    runner.drain(self, &mut report).await;
                    return Err(e);
                }
            }
            runner.meter.plan(deletes.len() as u64);
            for (action, expect) in deletes {
                runner
                    .run(self, &remote, action, 0, None, expect, &mut report)
                    .await;
            }
        }
        runner.drain(self, &mut report).await;
        // A remote that stopped answering: what was done is recorded (and its
        // journal entries wait in `journal_pending`); the journal is neither
        // read further nor appended to, so the next run sees the rest.
        runner.stopped(&remote)?;

        // A plaintext bucket's first push records the remote's mode, so a
        // second device joins it without an explicit `--plaintext`.
        if keys.is_none() && report.pushed > 0 {
            if let Err(e) = self.record_plaintext_mode(raw.as_ref(), restore).await {
                report.errors.push(SyncIssue {
                    key: String::new(),
                    cause: format!(
                        "recording the remote as plaintext (the next push tries again): {e}"
                    ),
                    retryable: true,
                });
            }
        }

        // 4. Tell the other replicas what changed, and remember how far the
        // journal was read.
        let own = read.get(&me).copied().unwrap_or_default();
        match self
            .append_journal(&raw, keys.as_deref(), own, config.journal_retain)
            .await
        {
            Ok(Some((last, digest))) => {
                read.insert(
                    me.clone(),
                    super::StreamPos {
                        pos: last,
                        digest: Some(digest),
                    },
                );
            }
            Ok(None) => {}
            Err(e) => report.errors.push(SyncIssue {
                key: String::new(),
                cause: format!("writing the change journal (the next sync tries again): {e}"),
                retryable: true,
            }),
        }
        // A filtered run skipped keys, and a run that left a remote change
        // unapplied (a pull-side action a push did not run, a failed HEAD
        // or download): what it read stays unread (only this device's own
        // stream moves on), and a full reconcile that did not apply
        // everything is not one.
        if opts.filter.is_some() || runner.unapplied || skipped {
            if let Some(own) = read.get(&me).copied() {
                jstate.streams.insert(me.clone(), own);
            }
        } else {
            jstate.streams = read;
            jstate.pos = Some(0);
            jstate.v = journal::FORMAT;
            if full {
                jstate.last_full_ms = started_ms;
                jstate.full_pages = listed_pages;
            }
        }
        self.set_journal_state(&endpoint, jstate).await?;
        report.missing_on_remote.sort();
        report.missing_on_remote.dedup();
        // A filtered run looked at some keys only: what the last complete
        // run found stands.
        if opts.filter.is_none() {
            self.record_missing_on_remote(&report.missing_on_remote)
                .await?;
        }

        // Conflicts found earlier and still open are part of the picture.
        let known: HashSet<String> = report.conflicts.iter().map(|c| c.key.clone()).collect();
        for c in self.conflicts().await? {
            if !known.contains(&c.key) {
                report.conflicts.push(c);
            }
        }
        report.conflicts.sort_by(|a, b| a.key.cmp(&b.key));
        report.errors.sort_by(|a, b| a.key.cmp(&b.key));
        report.duration = started.elapsed();
        report.timestamp = Some(self.inner.clock.now());
        Ok(report)
    }

    /// Replaces the setting `missing_on_remote` by what this run found
    /// (`status` counts it); writes only when it changes, so an idle run
    /// writes nothing.
    async fn record_missing_on_remote(&self, keys: &[String]) -> Result<()> {
        let found = super::MissingOnRemote {
            count: keys.len() as u64,
            keys: keys
                .iter()
                .take(super::MISSING_KEYS_KEPT)
                .cloned()
                .collect(),
        };
        let recorded: super::MissingOnRemote = self
            .setting_json(super::MISSING_ON_REMOTE)?
            .unwrap_or_default();
        if recorded == found {
            Ok(())
        } else if found.count == 0 {
            self.clear_setting(super::MISSING_ON_REMOTE).await
        } else {
            self.set_setting_json(super::MISSING_ON_REMOTE, &found)
                .await
        }
    }

    /// Writes the remote's [`PLAINTEXT_RECORD`](crate::remote::encrypted::PLAINTEXT_RECORD)
    /// once per endpoint (remembered in the setting `plaintext_recorded`),
    /// and again when a run puts a wiped remote back (`again`).
    async fn record_plaintext_mode(
        &self,
        raw: &dyn crate::remote::Remote,
        again: bool,
    ) -> Result<()> {
        const RECORDED: &str = "plaintext_recorded";
        let endpoint = raw.endpoint();
        let mut recorded: BTreeSet<String> = self.setting_json(RECORDED)?.unwrap_or_default();
        if recorded.contains(&endpoint) && !again {
            return Ok(());
        }
        crate::remote::encrypted::write_plaintext_record(raw).await?;
        recorded.insert(endpoint);
        self.set_setting_json(RECORDED, &recorded).await
    }

    /// With `restore_remote`: a local delete the remote's loss planned
    /// becomes a push of the local copy as a new object. `None` (and an
    /// error in the report) when the content is not on this device.
    fn restoring(&self, action: Action, report: &mut SyncReport) -> Result<Option<Action>> {
        let Action::DeleteLocal {
            key,
            expect: plan::Expect::Present(hash, _),
        } = action
        else {
            return Ok(Some(action));
        };
        if !self.residency(&key)?.cached {
            report.errors.push(SyncIssue {
                cause: "the remote no longer holds it and its content is not on this device \
                        (evicted): it cannot be put back"
                    .to_owned(),
                key,
                retryable: false,
            });
            return Ok(None);
        }
        Ok(Some(Action::Push {
            key,
            hash,
            cond: crate::remote::Precondition::IfAbsent,
            base: crate::remote::BASE_NONE.to_owned(),
        }))
    }

    /// Records a window's bookkeeping in one batch and queues the rest.
    async fn queue_window(
        &self,
        remote: &SharedRemote,
        runner: &mut Runner,
        actions: Vec<(Action, Option<RemoteObject>, plan::Expect)>,
        report: &mut SyncReport,
    ) -> Result<()> {
        // Listing times of agreed versions (after a large push, every key
        // once), in one transaction.
        let mut refreshes = Vec::new();
        let mut rest = Vec::new();
        for (action, seen, expect) in actions {
            match action {
                Action::Refresh {
                    key,
                    etag,
                    modified_ms,
                } => refreshes.push((key, etag, modified_ms)),
                other => rest.push((other, seen, expect)),
            }
        }
        if !refreshes.is_empty() {
            self.record(SyncRecord::Refreshed { batch: refreshes })
                .await?;
        }
        let pushing: Vec<String> = rest
            .iter()
            .filter(|(a, _, _)| a.is_push_side())
            .map(|(a, _, _)| a.key().to_owned())
            .collect();
        // The bytes to upload, when someone is told about them.
        let sizes = if runner.meter.is_told() && !pushing.is_empty() {
            self.with_reader(|c| index::sizes(c, &pushing))?
        } else {
            HashMap::new()
        };
        if !pushing.is_empty() {
            self.record(SyncRecord::Starting { keys: pushing }).await?;
        }
        runner.meter.plan(rest.len() as u64);
        for (action, seen, expect) in rest {
            let size = match &action {
                Action::Push { key, .. } => sizes.get(key).copied().unwrap_or(0),
                Action::Pull { .. } => seen.as_ref().map_or(0, |s| s.size),
                _ => 0,
            };
            runner
                .run(self, remote, action, size, seen, expect, report)
                .await;
        }
        Ok(())
    }

    /// The whole remote listing under the scopes (a full reconcile), page
    /// by page into a spill file; names that are not keys are reported and
    /// skipped.
    async fn spill_listing(
        &self,
        remote: &SharedRemote,
        scopes: &[String],
        keys: Option<&Keyring>,
        report: &mut SyncReport,
    ) -> Result<(Spill, u64)> {
        let mut spill = Spill::create(&self.inner.dir.join("tmp"))?;
        let mut pages = 0u64;
        let mut prefixes: Vec<&String> = scopes.iter().collect();
        prefixes.sort();
        prefixes.dedup_by(|b, a| b.starts_with(a.as_str()));
        for prefix in prefixes {
            if prefix == NOTHING_IN_SCOPE {
                continue;
            }
            let mut token = None;
            loop {
                let page = remote.list_page(prefix, token).await?;
                pages += 1;
                let mut objects = Vec::with_capacity(page.objects.len());
                for mut obj in page.objects {
                    if obj.key.starts_with(RESERVED_PREFIX) || !obj.key.starts_with(prefix.as_str())
                    {
                        continue;
                    }
                    if let Some(raw) = obj.key.strip_prefix(UNREADABLE_NAME) {
                        report.errors.push(SyncIssue {
                            key: raw.to_owned(),
                            cause: "the remote object's name does not decrypt under this bucket's \
                                    key (tampered, or not written by this bucket), skipped"
                                .into(),
                            retryable: false,
                        });
                        continue;
                    }
                    if let Err(e) = validate_key(&obj.key) {
                        report.errors.push(SyncIssue {
                            key: obj.key.clone(),
                            cause: format!(
                                "the remote object cannot be a ferry key, skipped: {}",
                                e.rule
                            ),
                            retryable: false,
                        });
                        continue;
                    }
                    annotate(keys, &mut obj);
                    objects.push(obj);
                }
                spill.insert(&objects)?;
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        Ok((spill, pages))
    }

    /// The next window of a full reconcile: every index row and every
    /// listed object with keys after `after`, up to a window's worth.
    fn full_window(&self, spill: &Spill, after: Option<&str>, size: usize) -> Result<Window> {
        let mut local = self.read_page("1 = 1", after, size)?;
        let mut remote = spill.page(after, size)?;
        let bound = window_bound(
            size,
            [
                (local.len(), local.last().map(|l| l.key.as_str())),
                (remote.len(), remote.last().map(|r| r.key.as_str())),
            ],
        );
        clip(&mut local, bound.as_deref(), |l| &l.key);
        clip(&mut remote, bound.as_deref(), |r| &r.key);
        Ok(Window {
            local,
            listing: remote.into_iter().map(|r| (r.key.clone(), r)).collect(),
            bound,
        })
    }

    /// The next window of a journal run: local work (changes not pushed,
    /// pinned objects whose content is not here) and the keys the journal
    /// names, after `after`. The remote side is what the journal says
    /// changed (as a HEAD finds it now) and, for local work it does not
    /// name, the version this replica agreed on (a conditional write finds
    /// out if the remote moved).
    #[allow(clippy::too_many_arguments)]
    async fn journal_window(
        &self,
        remote: &SharedRemote,
        changed: &BTreeSet<String>,
        parked: &std::collections::HashMap<String, i64>,
        after: Option<&str>,
        size: usize,
        keys: Option<&Keyring>,
        concurrency: usize,
        report: &mut SyncReport,
    ) -> Result<Window> {
        // Three indexed queries, each in key order; an idle sync reads no
        // row of a large bucket.
        let mut pages = [
            self.read_page("state <> 'synced' AND state = 'dirty'", after, size)?,
            self.read_page(
                "state <> 'synced' AND state = 'pending-delete'",
                after,
                size,
            )?,
            self.read_page(
                "pinned = 1 AND cached = 0 AND present = 1 \
                 AND state NOT IN ('dirty', 'pending-delete')",
                after,
                size,
            )?,
        ];
        let bound = window_bound(
            size,
            pages
                .iter()
                .map(|p| (p.len(), p.last().map(|l| l.key.as_str()))),
        );
        let mut work: Vec<LocalEntry> = Vec::new();
        for page in &mut pages {
            clip(page, bound.as_deref(), |l| &l.key);
            work.append(page);
        }
        let in_window =
            |k: &str| after.is_none_or(|a| k > a) && bound.as_deref().is_none_or(|b| k <= b);
        let lower = match after {
            Some(a) => std::ops::Bound::Excluded(a.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        let named: Vec<&String> = changed
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|k| in_window(k))
            .collect();
        let in_work: HashSet<String> = work.iter().map(|l| l.key.clone()).collect();
        for key in &named {
            if !in_work.contains(key.as_str()) {
                work.extend(self.local_entry(key)?);
            }
        }
        work.sort_by(|a, b| a.key.cmp(&b.key));
        // The keys the journal names, and local deletes or failed pushes of
        // keys that never agreed with the remote (our own push may have
        // landed unrecorded): as the remote has them now.
        let mut ask: Vec<String> = named.iter().map(|k| (*k).clone()).collect();
        // A local write that put the agreed version back (the same bytes
        // again, or an edit undone) over a row whose remote version may
        // have moved on, told by a record this replica already read (a
        // conflict the write ended): as the remote has it now, never the
        // agreed version assumed, or it would count as synced unseen.
        let reverted: HashSet<String> = work
            .iter()
            .filter(|l| {
                l.present
                    && l.state == crate::state::SyncState::Dirty
                    && l.base_etag.is_some()
                    && l.base_hash == Some(l.hash)
                    && l.base_meta == l.meta
                    && !changed.contains(&l.key)
                    && remote.refuses(&l.key).is_none()
            })
            .map(|l| l.key.clone())
            .collect();
        ask.extend(reverted.iter().cloned());
        ask.extend(
            work.iter()
                .filter(|l| {
                    l.base_etag.is_none()
                        && !changed.contains(&l.key)
                        && (!l.present || parked.contains_key(&l.key))
                        && remote.refuses(&l.key).is_none()
                })
                .map(|l| l.key.clone()),
        );
        let mut listing = BTreeMap::new();
        let mut failed: HashSet<String> = HashSet::new();
        for (key, result) in self.heads(remote, ask, concurrency).await {
            match result {
                Ok(Some(mut obj)) => {
                    annotate(keys, &mut obj);
                    listing.insert(key, obj);
                }
                Ok(None) => {}
                Err(e) => {
                    report.errors.push(issue(&key, &Error::Remote(e)));
                    failed.insert(key);
                }
            }
        }
        // Local work the journal does not name: the remote is taken to
        // hold the agreed version.
        for l in &work {
            if changed.contains(&l.key) || reverted.contains(&l.key) {
                continue;
            }
            if let (Some(etag), Some(hash)) = (&l.base_etag, l.base_hash) {
                let mut r = RemoteObject::listed(l.key.clone(), etag.clone(), 0);
                r.modified_ms = l.base_modified_ms;
                r.hash = Some(hash);
                listing.insert(l.key.clone(), r);
            }
        }
        work.retain(|l| !failed.contains(&l.key));
        Ok(Window {
            local: work,
            listing,
            bound,
        })
    }

    /// Completes a window's inputs (HEADs where the remote version's
    /// metadata decides; content hashes of foreign objects that meet a
    /// local version) and plans it. A failed HEAD fails its key only.
    #[allow(clippy::too_many_arguments)]
    async fn plan_window(
        &self,
        remote: &SharedRemote,
        window: Window,
        scope: &plan::Scope,
        policy: Policy,
        keys: Option<&Keyring>,
        concurrency: usize,
        deletions: &Deletions<'_>,
        report: &mut SyncReport,
    ) -> Result<Vec<(Action, Option<RemoteObject>, plan::Expect)>> {
        let Window {
            local, mut listing, ..
        } = window;
        let mut failed: HashSet<String> = HashSet::new();
        {
            let by_key: std::collections::HashMap<&str, &LocalEntry> =
                local.iter().map(|l| (l.key.as_str(), l)).collect();
            // Also a key the journal names whose listing shows the agreed
            // ETag: S3 keeps the ETag across a metadata-only rewrite, and
            // a listing time in the same second as the agreed one hides it.
            let named_same_etag = |r: &RemoteObject| {
                !r.has_metadata
                    && deletions.named.contains(&r.key)
                    && by_key
                        .get(r.key.as_str())
                        .is_some_and(|l| l.base_etag.as_deref() == Some(r.etag.as_str()))
            };
            let to_inspect: Vec<String> = listing
                .values()
                .filter(|r| {
                    plan::needs_inspection(by_key.get(r.key.as_str()).copied(), r)
                        || named_same_etag(r)
                        // Encrypted: whether a new version over ours was
                        // created anew (`plan::unproven_create`).
                        || (deletions.sealed
                            && !r.has_metadata
                            && by_key
                                .get(r.key.as_str())
                                .is_some_and(|l| plan::created_over_ours(l, r)))
                })
                .map(|r| r.key.clone())
                .collect();
            for (key, result) in self.heads(remote, to_inspect, concurrency).await {
                match result {
                    Ok(Some(mut obj)) => {
                        annotate(keys, &mut obj);
                        // Listing times are compared with listing times.
                        if let Some(listed) = listing.get(&key).filter(|l| l.etag == obj.etag) {
                            obj.modified_ms = listed.modified_ms;
                        }
                        listing.insert(key, obj);
                    }
                    Ok(None) => {
                        listing.remove(&key);
                    }
                    Err(e) => {
                        report.errors.push(issue(&key, &Error::Remote(e)));
                        failed.insert(key);
                    }
                }
            }
            // Foreign objects (no ferry-hash) that meet a local version:
            // establish their content hash once, by ETag or by download.
            for r in listing.values_mut() {
                let Some(l) = by_key.get(r.key.as_str()) else {
                    continue;
                };
                if r.hash.is_some()
                    || !r.has_metadata
                    || !l.present
                    || !l.cached
                    || l.base_etag.as_deref() == Some(r.etag.as_str())
                    || keys.is_some()
                {
                    continue;
                }
                match self.establish_hash(remote, l, r).await {
                    Ok(h) => r.hash = h,
                    Err(e) => {
                        report.errors.push(issue(&r.key, &e));
                        failed.insert(r.key.clone());
                    }
                }
            }
        }
        listing.retain(|k, _| !failed.contains(k));
        let local: Vec<LocalEntry> = local
            .into_iter()
            .filter(|l| !failed.contains(&l.key))
            .collect();
        let remote_list: Vec<RemoteObject> = listing.into_values().collect();
        let local_by_key: HashMap<&str, &LocalEntry> =
            local.iter().map(|l| (l.key.as_str(), l)).collect();
        let remote_by_key: HashMap<&str, &RemoteObject> =
            remote_list.iter().map(|r| (r.key.as_str(), r)).collect();
        let actions: Vec<Action> =
            plan::plan(&local, &remote_list, scope, policy, self.device_id())
                .into_iter()
                .map(|a| {
                    let l = local_by_key.get(a.key()).copied();
                    let proofs = deletions.proofs_of(a.key());
                    let before = matches!(a, Action::DeleteLocal { .. });
                    let bases = deletions.bases_of(a.key());
                    let a = plan::unproven_delete(
                        a,
                        l,
                        proofs,
                        bases,
                        deletions.sealed,
                        deletions.emulated,
                        policy,
                    );
                    let r = remote_by_key.get(a.key()).copied();
                    let a = plan::unseen_overwrite(
                        a,
                        l,
                        r,
                        bases,
                        proofs,
                        deletions.emulated_put,
                        self.device_id(),
                        policy,
                    );
                    // A version older than one this replica saw is a
                    // rollback or replay, which the pull refuses and
                    // reports: not a version created anew.
                    let a = if deletions.sealed {
                        let created = plan::unproven_create(
                            a.clone(),
                            l,
                            r,
                            bases,
                            proofs,
                            true,
                            self.device_id(),
                            policy,
                        );
                        let replayed =
                            || r.is_some_and(|r| self.check_stamp(&r.key, r.stamp).is_err());
                        if created != a && !replayed() {
                            created
                        } else {
                            a
                        }
                    } else {
                        a
                    };
                    let a = plan::deleted_after_landing(a, l, r, proofs, policy);
                    if before && !matches!(a, Action::DeleteLocal { .. }) {
                        tracing::warn!(
                            key = a.key(),
                            "a remote deletion nothing proves saw this version: kept"
                        );
                        if deletions.sealed {
                            // Not a failure: kept and pushed again, and
                            // named in the report, the event and `status`.
                            report.missing_on_remote.push(a.key().to_owned());
                        }
                    }
                    a
                })
                .collect();
        let mut actions = actions;
        actions.extend(self.proven_after_all(&local, &remote_by_key, deletions, policy)?);
        for a in &actions {
            tracing::trace!(key = a.key(), action = ?a, "planned");
        }
        // Each action with the remote object it was planned against.
        let mut by_key: BTreeMap<String, RemoteObject> = remote_list
            .into_iter()
            .map(|r| (r.key.clone(), r))
            .collect();
        Ok(actions
            .into_iter()
            .map(|a| {
                let seen = by_key.remove(a.key());
                let expect = plan::expect_of(local_by_key.get(a.key()).copied());
                (a, seen, expect)
            })
            .collect())
    }

    /// In an encrypted bucket (`sealed`), the remote's key file read once
    /// per run before its first write: a remote rekeyed on another device
    /// whose journal this replica did not read past (the new key's streams
    /// start over, below its positions) would otherwise take writes sealed
    /// under the old key, and deletes of names the old key made. One GET
    /// per run that writes; a run with nothing to write pays none. The
    /// actions in flight finish first (a replica sends one request at a
    /// time where the configuration asks for one action at a time).
    async fn check_key_before_writing(
        &self,
        raw: &dyn crate::remote::Remote,
        sealed: bool,
        checked: &mut bool,
        runner: &mut Runner,
        report: &mut SyncReport,
    ) -> Result<()> {
        if sealed && !*checked {
            while runner.join_one(self, report).await {}
            self.check_remote_key(raw).await?;
            *checked = true;
        }
        Ok(())
    }

    /// Conflicts the unproven-delete rule raised (`changed here, deleted on
    /// the remote` over an unchanged local version) that a delete or put
    /// record read since explains: the record arrived after the listing
    /// that found the key gone. The deletion was proven after all, so the
    /// local copy goes, as it would have had the record come first. The
    /// same for a `lost-update` conflict (`plan::unseen_overwrite`) over
    /// our unchanged version: a record read since shows a device saw it
    /// (deleted it, or replaced it knowingly) before the version the
    /// remote holds now, which is pulled; and for a `both created` conflict
    /// over our unchanged version (`plan::unproven_create`) alike.
    fn proven_after_all(
        &self,
        local: &[LocalEntry],
        remote: &HashMap<&str, &RemoteObject>,
        deletions: &Deletions<'_>,
        policy: Policy,
    ) -> Result<Vec<Action>> {
        let mut out = Vec::new();
        if policy.direction == plan::Direction::UploadOnly {
            return Ok(out);
        }
        for l in local {
            if let Some(a) = plan::restore_retracted(
                l,
                remote.get(l.key.as_str()).copied(),
                deletions.proofs_of(&l.key),
            ) {
                out.push(a);
                continue;
            }
            let unchanged = l.present && l.base_hash == Some(l.hash) && l.base_meta == l.meta;
            if l.state != crate::state::SyncState::Conflict || !unchanged {
                continue;
            }
            let r = remote.get(l.key.as_str()).copied();
            let proofs = deletions.proofs_of(&l.key);
            let bases = deletions.bases_of(&l.key);
            if !(plan::delete_saw(l, proofs) || plan::superseded(l, bases)) {
                continue;
            }
            let reason = self.with_reader(|c| {
                Ok(
                    c.prepare_cached("SELECT conflict FROM objects WHERE key = ?1")?
                        .query_row([&l.key], |r| r.get::<_, Option<String>>(0))
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?
                        .flatten(),
                )
            })?;
            match (super::parse_reason(reason), r) {
                (Some(plan::ConflictReason::ModifiedLocallyDeletedRemotely), None) => {
                    out.push(Action::DeleteLocal {
                        key: l.key.clone(),
                        expect: plan::expect_of(Some(l)),
                    });
                }
                // A lost update raised before the record that shows the
                // other writer (or a delete between) saw our version: the
                // remote version follows ours, and is taken. The same for
                // a version created anew over our unchanged one
                // (`plan::unproven_create`) before the delete's record
                // arrived, and for a key found gone (the unproven-delete
                // rule) that holds a version created after the delete now.
                (
                    Some(
                        plan::ConflictReason::LostUpdate
                        | plan::ConflictReason::BothCreated
                        | plan::ConflictReason::ModifiedLocallyDeletedRemotely,
                    ),
                    Some(r),
                ) if r.hash != Some(l.hash) => {
                    out.push(Action::Pull {
                        key: l.key.clone(),
                        etag: r.etag.clone(),
                        expect: plan::expect_of(Some(l)),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// HEADs `keys`, at most `concurrency` at once.
    pub(super) async fn heads(
        &self,
        remote: &SharedRemote,
        keys: Vec<String>,
        concurrency: usize,
    ) -> Vec<(
        String,
        std::result::Result<Option<RemoteObject>, RemoteError>,
    )> {
        use futures::StreamExt;
        futures::stream::iter(keys.into_iter().map(|key| {
            let remote = remote.clone();
            async move {
                let found = remote.head(&key).await;
                (key, found)
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
    }
}

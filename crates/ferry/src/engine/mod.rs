//! The background sync engine and leadership.
//!
//! Any number of processes may open a bucket; one at a time runs the sync
//! engine: the one holding an exclusive OS lock on `<bucket>/leader.lock`.
//! The OS drops the lock when its holder dies (even by SIGKILL), so a
//! waiting process that polls every `leader_poll_ms` takes over within that
//! time. A one-shot `sync` in a process that does not lead either takes the
//! lock for the run (no leader) or files a request in the index
//! (`sync_requests`) that the leader runs and answers; it never runs a
//! second engine.

pub mod events;
pub(crate) mod handle;
pub mod schedule;

use std::fs::{File, OpenOptions};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bucket::Bucket;
use crate::engine::events::{Event, SyncSummary};
use crate::engine::schedule::{Connectivity, RunOutcome, Schedule, ScheduleConfig};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::remote::RemoteErrorKind;
use crate::store::index;
use crate::sync::{ProgressFn, SyncMode, SyncOptions, SyncReport, DESTROYED};

pub(crate) use handle::EngineHandle;

/// How long `destroy --clear-local` waits for other processes to close
/// the bucket (their engines stop at their next tick).
const DESTROY_WAIT: Duration = Duration::from_secs(10);

/// How long a one-shot sync waits for the leader to answer its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

impl SyncSummary {
    /// The summary of a report.
    pub fn of(r: &SyncReport) -> Self {
        SyncSummary {
            pushed: r.pushed,
            pulled: r.pulled,
            deleted_remote: r.deleted_remote,
            deleted_local: r.deleted_local,
            conflicts: r.conflicts.iter().map(|c| c.key.clone()).collect(),
            errors: r
                .errors
                .iter()
                .map(|e| (e.key.clone(), e.cause.clone()))
                .collect(),
            missing_on_remote: r.missing_on_remote.clone(),
            duration_ms: r.duration.as_millis() as u64,
            timestamp_ms: r
                .timestamp
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }
}

impl Bucket {
    /// Receives the bucket's events, this process's and (inside a Tokio
    /// runtime) those other processes with the bucket open append to its
    /// event log, such as the leader's sync events; drop the receiver to
    /// unsubscribe.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        let receiver = self.inner.events.subscribe();
        self.inner
            .event_log
            .relay(Arc::downgrade(&self.inner), self.inner.events.clone());
        receiver
    }

    pub(crate) fn emit(&self, event: Event) {
        self.inner.event_log.append(&event);
        let _ = self.inner.events.send(event);
    }

    /// True while this process runs the sync engine (or a one-shot run).
    pub fn is_leader(&self) -> bool {
        self.inner
            .leader
            .lock()
            .map(|l| l.is_some())
            .unwrap_or(false)
    }

    /// The pid recorded by the current leader, if any.
    pub fn leader_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir().join("leader.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Tries to take the leader lock; true when this process now leads.
    pub(crate) fn try_lead(&self) -> Result<bool> {
        let mut held = self.inner.leader.lock().map_err(|_| Error::Closed)?;
        if held.is_some() {
            return Ok(true);
        }
        let path = self.dir().join("leader.lock");
        let file: File = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("opening the leader lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = std::fs::write(
                    self.dir().join("leader.pid"),
                    std::process::id().to_string(),
                );
                *held = Some(file);
                Ok(true)
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io("taking the leader lock", &path, e))
            }
        }
    }

    pub(crate) fn resign(&self) {
        if let Ok(mut held) = self.inner.leader.lock() {
            if held.take().is_some() {
                let _ = std::fs::remove_file(self.dir().join("leader.pid"));
            }
        }
    }

    /// Pushes local changes and pulls remote ones. If another process runs
    /// the sync engine, asks it to run now and returns that run's result.
    pub async fn sync_with_progress(
        &self,
        opts: SyncOptions,
        progress: Option<ProgressFn>,
    ) -> Result<SyncReport> {
        if !opts.dry_run {
            self.writable()?;
        }
        let engine_running = self
            .inner
            .engine
            .lock()
            .map(|e| e.is_some())
            .unwrap_or(false);
        // A dry run changes nothing: it needs no leadership and runs here,
        // so its plan comes back whole.
        if (self.is_leader() && engine_running) || opts.dry_run {
            return self.run_sync(opts, progress).await;
        }
        if self.try_lead()? {
            let result = self.run_sync(opts, progress).await;
            if !engine_running {
                self.resign();
            }
            return result;
        }
        self.request_sync(opts).await
    }

    /// Files a request for the leader and waits for its answer.
    async fn request_sync(&self, opts: SyncOptions) -> Result<SyncReport> {
        // The two choices about an empty listing ride on the mode, as
        // `+restore-remote` / `+accept-remote-deletes` (a leader that does
        // not know them runs without them, and stops at the empty listing).
        let mut mode = match opts.mode {
            SyncMode::Both => "both",
            SyncMode::Push => "push",
            SyncMode::Pull => "pull",
        }
        .to_owned();
        if opts.restore_remote {
            mode.push_str("+restore-remote");
        }
        if opts.accept_remote_deletes {
            mode.push_str("+accept-remote-deletes");
        }
        if opts.full_if_cheap {
            mode.push_str("+full-if-cheap");
        }
        // Serializing a list of strings cannot fail.
        let filter = opts
            .filter
            .as_ref()
            .map(|f| serde_json::to_string(f.lines()).unwrap_or_default());
        let path = self.inner.index_path.clone();
        let now = self.now_ms();
        let id: i64 = tokio::task::spawn_blocking(move || -> Result<i64> {
            let conn = index::open(&path, false)?;
            conn.execute(
                "INSERT INTO sync_requests (mode, dry_run, requested_ms, state, force, retry, max_delete, full, filter) \
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8)",
                params![
                    mode,
                    opts.dry_run,
                    now,
                    opts.force,
                    opts.retry,
                    opts.max_delete.map(|m| m.to_string()),
                    opts.full,
                    filter
                ],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await
        .map_err(|e| Error::task("request task", e))??;
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer: Option<(String, Option<String>, Option<String>)> =
                self.with_reader(|c| {
                    use rusqlite::OptionalExtension;
                    Ok(c.prepare_cached(
                        "SELECT state, result, error FROM sync_requests WHERE id = ?1",
                    )?
                    .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?)
                })?;
            match answer {
                Some((state, Some(result), _)) if state == "done" => {
                    let summary: SyncSummary = serde_json::from_str(&result)
                        .map_err(|e| Error::IndexData(format!("sync answer: {e}")))?;
                    return Ok(report_of(&summary));
                }
                Some((state, _, error)) if state == "failed" => {
                    return Err(Error::LeaderFailed {
                        pid: self.leader_pid(),
                        error: error.unwrap_or_default(),
                    });
                }
                _ => {}
            }
            // The leader may have gone: then run here.
            if self.try_lead()? {
                let _ = self.cancel_request(id).await;
                let result = self.run_sync(opts, None).await;
                self.resign();
                return result;
            }
            if started.elapsed() > REQUEST_TIMEOUT {
                let _ = self.cancel_request(id).await;
                return Err(Error::LeaderBusy {
                    pid: self.leader_pid(),
                });
            }
        }
    }

    async fn cancel_request(&self, id: i64) -> Result<()> {
        let path = self.inner.index_path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = index::open(&path, false)?;
            conn.execute("DELETE FROM sync_requests WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
        .map_err(|e| Error::task("request task", e))?
    }

    /// Starts the background engine in this process (it waits to lead).
    pub async fn start_sync(&self) -> Result<()> {
        self.writable()?;
        let mut engine = self.inner.engine.lock().map_err(|_| Error::Closed)?;
        if engine.is_some() {
            return Ok(());
        }
        let (stop, stopped) = watch::channel(false);
        let me = self.clone();
        let task = tokio::spawn(async move { me.engine_loop(stopped).await });
        *engine = Some(EngineHandle { stop, task });
        Ok(())
    }

    /// Stops the background engine: the run in progress finishes (its
    /// outcomes are recorded one by one, atomically), then leadership is released.
    pub async fn stop_sync(&self) -> Result<()> {
        let handle = self.inner.engine.lock().map_err(|_| Error::Closed)?.take();
        if let Some(h) = handle {
            let _ = h.stop.send(true);
            let _ = h.task.await;
        }
        Ok(())
    }

    /// Stops sync and, with `clear_local`, deletes the bucket's local data.
    pub async fn destroy(self, clear_local: bool) -> Result<()> {
        self.stop_sync().await?;
        self.resign();
        // Detached and marked: every engine of the bucket, in any process,
        // sees the mark at its next tick and stops.
        self.mark_destroyed().await?;
        if clear_local {
            let deadline = Instant::now() + DESTROY_WAIT;
            loop {
                let others = self
                    .inner
                    .blobs
                    .other_openers(self.inner.open_marker.as_ref())?;
                if others.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::BucketInUse { pids: others });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let dir = self.dir().to_owned();
            drop(self);
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("deleting the bucket", &dir, e))?;
        }
        Ok(())
    }

    /// Detaches the remote and marks the bucket destroyed (cleared by the
    /// next `set_remote`).
    async fn mark_destroyed(&self) -> Result<()> {
        let path = self.inner.index_path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = index::open(&path, false)?;
            conn.execute("DELETE FROM settings WHERE name = 'remote'", [])?;
            index::set_setting(&conn, DESTROYED, "1")?;
            Ok(())
        })
        .await
        .map_err(|e| Error::task("destroy", e))??;
        if let Ok(mut r) = self.inner.remote.write() {
            *r = None;
        }
        self.emit(Event::Destroyed);
        Ok(())
    }

    /// True once `destroy` ran on the bucket (in any process).
    pub(crate) fn is_destroyed(&self) -> bool {
        self.with_reader(|c| index::setting(c, DESTROYED))
            .ok()
            .flatten()
            .is_some()
    }

    fn schedule_config(&self) -> Result<(ScheduleConfig, Duration)> {
        let c = self.sync_config()?;
        Ok((
            schedule_of(&c),
            Duration::from_millis(c.leader_poll_ms.max(10)),
        ))
    }

    async fn engine_loop(self, mut stop: watch::Receiver<bool>) {
        let Ok((cfg, poll)) = self.schedule_config() else {
            return;
        };
        // Wait to lead.
        loop {
            if *stop.borrow() {
                return;
            }
            if self.is_destroyed() {
                self.emit(Event::Destroyed);
                return;
            }
            match self.try_lead() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => self.emit(Event::SyncFailed {
                    error: e.to_string(),
                }),
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
        self.emit(Event::LeaderPromoted);
        let mut schedule = Schedule::new(cfg, Instant::now());
        let mut current_cfg = cfg;
        let mut reconciled = false;
        let mut watcher = DataVersion::new(&self);
        let tick = Duration::from_millis(200);
        loop {
            if *stop.borrow() {
                break;
            }
            if self.is_destroyed() {
                self.emit(Event::Destroyed);
                break;
            }
            let now = Instant::now();
            let wake = schedule
                .next_wakeup()
                .map(|t| t.min(now + tick))
                .unwrap_or(now + tick);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.inner.local_write.notified() => schedule.on_local_write(Instant::now()),
                _ = stop.changed() => break,
            }
            // Writes by other processes show as a new data version: work
            // queued, or new settings.
            if watcher.changed() {
                if let Ok((new_cfg, _)) = self.schedule_config() {
                    if new_cfg != current_cfg {
                        schedule.set_config(new_cfg, Instant::now());
                        current_cfg = new_cfg;
                    }
                }
                // A lower cache limit applies at once.
                let _ = self.enforce_cache_limit().await;
                if self.has_local_work() {
                    schedule.on_local_write(Instant::now());
                }
            }
            let requests = self.pending_requests();
            if !requests.is_empty() || schedule.is_due(Instant::now()) {
                // Requests with the same options share one run; a due
                // scheduled run joins the default one.
                let mut runs: Vec<(SyncOptions, Vec<i64>)> = Vec::new();
                if schedule.is_due(Instant::now()) {
                    // The engine's first run is a full reconcile (what tools
                    // other than ferry changed while it was not running);
                    // later ones read the change journal.
                    let opts = SyncOptions {
                        full: !reconciled,
                        ..SyncOptions::default()
                    };
                    runs.push((opts, Vec::new()));
                }
                for (id, opts) in requests {
                    match runs.iter_mut().find(|(o, _)| *o == opts) {
                        Some((_, ids)) => ids.push(id),
                        None => runs.push((opts, vec![id])),
                    }
                }
                schedule.on_sync_start();
                let mut outcome = RunOutcome::Idle;
                for (opts, ids) in runs {
                    outcome = match (outcome, self.engine_run(opts, &ids).await) {
                        (RunOutcome::Offline, _) | (_, RunOutcome::Offline) => RunOutcome::Offline,
                        (RunOutcome::Changed, _) | (_, RunOutcome::Changed) => RunOutcome::Changed,
                        _ => RunOutcome::Idle,
                    };
                }
                if outcome != RunOutcome::Offline {
                    reconciled = true;
                }
                match schedule.on_sync_done(Instant::now(), outcome) {
                    Connectivity::WentOffline => self.emit(Event::Offline),
                    Connectivity::CameOnline => self.emit(Event::Online),
                    Connectivity::Same => {}
                }
                // Our own commits bumped the data version; do not mistake them.
                watcher.changed();
            }
        }
        self.resign();
        self.emit(Event::LeaderDemoted);
    }

    fn has_local_work(&self) -> bool {
        self.with_reader(|c| {
            Ok(c.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE state IN ('pending', 'failed'))",
            )?
            .query_row([], |r| r.get::<_, bool>(0))?)
        })
        .unwrap_or(false)
    }

    /// Pending one-shot requests filed by other processes, with their options.
    fn pending_requests(&self) -> Vec<(i64, SyncOptions)> {
        self.with_reader(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, mode, dry_run, force, retry, max_delete, full, filter FROM sync_requests \
                 WHERE state = 'pending' ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let text = r.get::<_, String>(1)?;
                    let mut parts = text.split('+');
                    let mode = match parts.next() {
                        Some("push") => SyncMode::Push,
                        Some("pull") => SyncMode::Pull,
                        _ => SyncMode::Both,
                    };
                    let choices: Vec<&str> = parts.collect();
                    Ok((
                        r.get::<_, i64>(0)?,
                        SyncOptions {
                            mode,
                            dry_run: r.get(2)?,
                            force: r.get(3)?,
                            retry: r.get(4)?,
                            max_delete: r.get::<_, Option<String>>(5)?.and_then(|m| m.parse().ok()),
                            full: r.get(6)?,
                            restore_remote: choices.contains(&"restore-remote"),
                            accept_remote_deletes: choices.contains(&"accept-remote-deletes"),
                            full_if_cheap: choices.contains(&"full-if-cheap"),
                            filter: r.get::<_, Option<String>>(7)?.map(|json| {
                                // Written from a `Filter` by `request_sync`;
                                // a row that does not parse matches nothing.
                                Arc::new(serde_json::from_str(&json).unwrap_or_else(|_| {
                                    Filter::from_lines(&["- **"]).unwrap_or_default()
                                }))
                            }),
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .unwrap_or_default()
    }

    /// One engine run with `opts`; answers the requests it covers.
    async fn engine_run(&self, opts: SyncOptions, requests: &[i64]) -> RunOutcome {
        let result = self.run_sync(opts, None).await;
        let (state, answer, error) = match &result {
            Ok(r) => (
                "done",
                serde_json::to_string(&SyncSummary::of(r)).ok(),
                None,
            ),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        if !requests.is_empty() {
            let path = self.inner.index_path.clone();
            let ids = requests.to_vec();
            let now = self.now_ms();
            let _ = tokio::task::spawn_blocking(move || -> Result<()> {
                let conn = index::open(&path, false)?;
                for id in ids {
                    conn.execute(
                        "UPDATE sync_requests SET state = ?2, result = ?3, error = ?4 WHERE id = ?1",
                        params![id, state, answer, error],
                    )?;
                }
                conn.execute("DELETE FROM sync_requests WHERE state <> 'pending' AND requested_ms < ?1", [now - 3_600_000])?;
                Ok(())
            })
            .await;
        }
        match result {
            Ok(r) => {
                let moved = r.pushed + r.pulled + r.deleted_local + r.deleted_remote;
                if moved > 0 || !r.errors.is_empty() {
                    RunOutcome::Changed
                } else {
                    RunOutcome::Idle
                }
            }
            Err(Error::Remote(e))
                if matches!(
                    e.kind,
                    RemoteErrorKind::Unreachable | RemoteErrorKind::Retryable
                ) =>
            {
                RunOutcome::Offline
            }
            Err(Error::RemoteDown { .. }) => RunOutcome::Offline,
            Err(_) => RunOutcome::Changed,
        }
    }
}

/// The schedule the sync settings ask for.
fn schedule_of(c: &crate::sync::SyncConfig) -> ScheduleConfig {
    ScheduleConfig {
        interval: (c.interval_secs > 0).then(|| Duration::from_secs(c.interval_secs)),
        debounce: Duration::from_millis(c.debounce_ms),
        max_delay: Duration::from_millis(c.debounce_ms.saturating_mul(8).max(1)),
        idle_cap: Duration::from_secs(c.idle_interval_max_secs.max(c.interval_secs)),
        ..ScheduleConfig::default()
    }
}

/// Rebuilds a report from a summary answered by another process.
fn report_of(s: &SyncSummary) -> SyncReport {
    SyncReport {
        parked: 0,
        full: false,
        pushed: s.pushed,
        pulled: s.pulled,
        deleted_remote: s.deleted_remote,
        deleted_local: s.deleted_local,
        conflicts: s
            .conflicts
            .iter()
            .map(|k| crate::sync::ConflictInfo {
                key: k.clone(),
                reason: None,
                remote_etag: None,
                deleted_locally: false,
            })
            .collect(),
        errors: s
            .errors
            .iter()
            .map(|(k, c)| crate::sync::SyncIssue {
                key: k.clone(),
                cause: c.clone(),
                retryable: true,
            })
            .collect(),
        missing_on_remote: s.missing_on_remote.clone(),
        planned: Vec::new(),
        duration: Duration::from_millis(s.duration_ms),
        timestamp: Some(
            std::time::UNIX_EPOCH + Duration::from_millis(s.timestamp_ms.max(0) as u64),
        ),
    }
}

/// Watches `PRAGMA data_version`, which changes when another connection commits.
struct DataVersion {
    conn: Option<rusqlite::Connection>,
    last: i64,
}

impl DataVersion {
    fn new(bucket: &Bucket) -> Self {
        let conn = index::open(&bucket.inner.index_path, false).ok();
        let mut me = DataVersion { conn, last: 0 };
        me.changed();
        me
    }

    fn changed(&mut self) -> bool {
        let Some(conn) = &self.conn else { return true };
        let now: i64 = conn
            .pragma_query_value(None, "data_version", |r| r.get(0))
            .unwrap_or(self.last + 1);
        let changed = now != self.last;
        self.last = now;
        changed
    }
}

#[cfg(test)]
mod schedule_settings_tests {
    use super::*;
    use crate::sync::SyncConfig;

    /// Issue 24, 7.4: an idle engine backed off to 300 s; the cap is the
    /// setting `idle_interval_max_secs` (60 s by default), never below the
    /// interval.
    #[test]
    fn idle_backoff_is_capped_by_the_setting() {
        let c = SyncConfig::default();
        assert_eq!(schedule_of(&c).idle_cap, Duration::from_secs(60));
        let c = SyncConfig {
            idle_interval_max_secs: 15,
            interval_secs: 30,
            ..SyncConfig::default()
        };
        assert_eq!(schedule_of(&c).idle_cap, Duration::from_secs(30));
        let c = SyncConfig {
            idle_interval_max_secs: 600,
            ..SyncConfig::default()
        };
        assert_eq!(schedule_of(&c).idle_cap, Duration::from_secs(600));
    }
}

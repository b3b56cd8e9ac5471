//! Sync settings and scopes, kept in the index's settings table.

use crate::bucket::Bucket;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::remote::spec::RemoteSpec;
use crate::state::SyncState;
use crate::store::index;
use crate::store::record::SyncRecord;
use crate::sync::plan;

use super::{SyncConfig, SyncMode, SyncOptions, SyncReport, NOTHING_IN_SCOPE};

/// Setting: present once the bucket was destroyed (engines in every
/// process stop when they see it; `set_remote` removes it).
pub(crate) const DESTROYED: &str = "destroyed";

/// Setting: the scope filter's rule lines.
const SCOPE_FILTER: &str = "scope_filter";

impl Bucket {
    pub(crate) fn setting_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>> {
        let raw = self.with_reader(|c| index::setting(c, name))?;
        raw.map(|v| {
            serde_json::from_str(&v).map_err(|e| Error::IndexData(format!("setting {name}: {e}")))
        })
        .transpose()
    }

    pub(crate) async fn set_setting_json<T: serde::Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<()> {
        self.writable()?;
        let text = serde_json::to_string(value)
            .map_err(|e| Error::IndexData(format!("setting {name}: {e}")))?;
        let path = self.inner.index_path.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = index::open(&path, false)?;
            index::set_setting(&conn, &name, &text)
        })
        .await
        .map_err(|e| Error::task("settings task", e))?
    }

    /// Removes a setting.
    pub(crate) async fn clear_setting(&self, name: &'static str) -> Result<()> {
        self.writable()?;
        let path = self.inner.index_path.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let conn = index::open(&path, false)?;
            conn.execute("DELETE FROM settings WHERE name = ?1", [name])?;
            Ok(())
        })
        .await
        .map_err(|e| Error::task("settings task", e))?
    }

    /// The recorded remote, if any.
    pub fn remote_spec(&self) -> Result<Option<RemoteSpec>> {
        self.setting_json("remote")
    }

    /// Records the remote. The same location spelled differently (see
    /// [`RemoteSpec::same_location`]) keeps every agreement and tombstone.
    /// A different location forgets what was agreed with the old one: every
    /// object is compared afresh (by version) on the next sync, and local
    /// deletes not yet pushed are dropped (the new remote never had them).
    pub async fn set_remote(&self, spec: RemoteSpec) -> Result<()> {
        spec.kind()?;
        let previous = self.remote_spec()?;
        self.set_setting_json("remote", &spec).await?;
        // A destroyed bucket given a remote again lives again.
        self.clear_setting(DESTROYED).await?;
        if previous.as_ref().is_some_and(|p| !p.same_location(&spec)) {
            // What the old remote was missing says nothing of the new one.
            self.clear_setting(super::MISSING_ON_REMOTE).await?;
            let path = self.inner.index_path.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let conn = index::open(&path, false)?;
                conn.execute(
                    "UPDATE objects SET base_etag = NULL, base_hash = NULL, \
                     state = CASE WHEN present = 1 THEN 'dirty' ELSE state END",
                    [],
                )?;
                conn.execute("DELETE FROM objects WHERE present = 0", [])?;
                Ok(())
            })
            .await
            .map_err(|e| Error::task("settings task", e))??;
        }
        if let Ok(mut r) = self.inner.remote.write() {
            *r = None;
        }
        Ok(())
    }

    /// The sync settings.
    pub fn sync_config(&self) -> Result<SyncConfig> {
        Ok(self.setting_json("sync")?.unwrap_or_default())
    }

    /// Changes the sync settings (takes effect at the next connect for `max_retries`).
    pub async fn set_sync_config(&self, config: SyncConfig) -> Result<()> {
        let lowered = config.max_cache_size < self.sync_config()?.max_cache_size;
        self.set_setting_json("sync", &config).await?;
        // A lower cache limit applies at once (running engines in other
        // processes see the new settings at their next tick and do the same).
        if lowered {
            self.enforce_cache_limit().await?;
        }
        Ok(())
    }

    /// The prefixes that sync (`[""]`, the default, means everything).
    pub fn scopes(&self) -> Result<Vec<String>> {
        Ok(self
            .setting_json("scopes")?
            .unwrap_or_else(|| vec![String::new()]))
    }

    /// What syncs: the prefixes and the scope filter.
    pub(super) fn effective_scope(&self) -> Result<plan::Scope> {
        let scopes = self.scopes()?;
        Ok(plan::Scope {
            prefixes: if scopes.is_empty() {
                vec![NOTHING_IN_SCOPE.to_owned()]
            } else {
                scopes
            },
            filter: self.scope_filter()?,
        })
    }

    /// The rules that narrow the scope's prefixes (empty: none).
    pub fn scope_filter(&self) -> Result<Filter> {
        Ok(self.setting_json(SCOPE_FILTER)?.unwrap_or_default())
    }

    /// Replaces the scope filter: local objects it now excludes become
    /// orphans (their data stays), and, when connected, what it now
    /// includes is pulled at once.
    pub async fn set_scope_filter(&self, filter: Filter) -> Result<SyncReport> {
        if filter.is_empty() {
            self.clear_setting(SCOPE_FILTER).await?;
        } else {
            self.set_setting_json(SCOPE_FILTER, &filter).await?;
        }
        self.orphan_out_of_scope("").await?;
        self.readopt_in_scope().await?;
        self.pull_new_scope().await
    }

    /// Adds a prefix to the sync scope and, when connected, pulls it at once.
    /// Adding a prefix when everything syncs narrows the scope to that prefix.
    pub async fn add_scope(&self, prefix: &str) -> Result<SyncReport> {
        let mut scopes = self.scopes()?;
        // Unless everything synced (then a prefix narrows it), the scope
        // grows by what it did not hold.
        let grows = !scopes.iter().any(|s| s.is_empty()) && !scopes.iter().any(|s| s == prefix);
        scopes.retain(|s| !s.is_empty());
        if !scopes.iter().any(|s| s == prefix) {
            scopes.push(prefix.to_owned());
        }
        scopes.sort();
        self.set_setting_json("scopes", &scopes).await?;
        if grows {
            self.readopt_in_scope().await?;
        }
        self.pull_new_scope().await
    }

    /// After the scope grew: rows it holds again that an earlier, narrower
    /// scope made orphans take back the state their two sides say (`dirty`
    /// when changed here since the version agreed on, so they are pushed;
    /// else `synced`, or `stale` without local content), and the next sync
    /// of every remote is a full reconcile that reads the other devices'
    /// journal streams again from their oldest record kept: the records
    /// that named these keys while they were out of scope were read and
    /// passed over, and their delete proofs and version stamps are needed
    /// now. Both hold when the pull that follows fails.
    async fn readopt_in_scope(&self) -> Result<()> {
        let scope = self.effective_scope()?;
        let mut after: Option<String> = None;
        loop {
            let page = self.read_page(
                "state <> 'synced' AND state = 'orphan'",
                after.as_deref(),
                super::run::WINDOW,
            )?;
            let Some(last) = page.last().map(|l| l.key.clone()) else {
                break;
            };
            for l in page {
                if !l.present || !scope.contains(&l.key) {
                    continue;
                }
                let state = match (plan::unchanged_since_agreed(&l), l.cached) {
                    (false, _) => SyncState::Dirty,
                    (true, true) => SyncState::Synced,
                    (true, false) => SyncState::Stale,
                };
                let expect = Some(crate::sync::plan::Expect::Present(l.hash, l.meta));
                self.record(SyncRecord::State {
                    key: l.key,
                    state,
                    expect,
                })
                .await?;
            }
            after = Some(last);
        }
        let mut all: std::collections::BTreeMap<String, super::JournalState> =
            self.setting_json("journal")?.unwrap_or_default();
        let me = self.device_id().to_owned();
        let others_read = |s: &super::JournalState| s.streams.keys().any(|d| *d != me);
        if all.values().any(|s| s.pos.is_some() || others_read(s)) {
            for s in all.values_mut() {
                s.pos = None;
                // This device's own position stays: its next record
                // follows the last one it wrote.
                s.streams.retain(|d, _| *d == me);
            }
            self.set_setting_json("journal", &all).await?;
        }
        Ok(())
    }

    /// A pull of the whole scope (what it gained predates the journal).
    async fn pull_new_scope(&self) -> Result<SyncReport> {
        if self.connected_remote().is_ok() {
            self.sync(SyncOptions {
                mode: SyncMode::Pull,
                full: true,
                ..Default::default()
            })
            .await
        } else {
            Ok(SyncReport::default())
        }
    }

    /// Removes a prefix from the sync scope; its local objects stay, as orphans.
    pub async fn remove_scope(&self, prefix: &str) -> Result<()> {
        let mut scopes = self.scopes()?;
        scopes.retain(|s| s != prefix);
        self.set_setting_json("scopes", &scopes).await?;
        self.orphan_out_of_scope(prefix).await
    }

    /// Marks the present objects under `prefix` that are out of scope as
    /// orphans, a window at a time.
    async fn orphan_out_of_scope(&self, prefix: &str) -> Result<()> {
        let scope = self.effective_scope()?;
        let mut after = prefix.to_owned();
        loop {
            let page = self.read_page("1 = 1", Some(&after), super::run::WINDOW)?;
            let Some(last) = page.last().map(|l| l.key.clone()) else {
                break;
            };
            for l in page {
                if !l.key.starts_with(prefix) {
                    return Ok(());
                }
                if l.present && l.state != SyncState::Orphan && !scope.contains(&l.key) {
                    let expect = Some(crate::sync::plan::Expect::Present(l.hash, l.meta));
                    self.record(SyncRecord::State {
                        key: l.key,
                        state: SyncState::Orphan,
                        expect,
                    })
                    .await?;
                }
            }
            after = last;
        }
        Ok(())
    }
}

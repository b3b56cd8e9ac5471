//! When the background engine syncs: a sans-IO schedule. It takes events
//! and an explicit `now`, and answers when to wake next and whether a sync
//! is due; the engine owns the clock and the sockets.
//!
//! Rules: a periodic sync every `interval` (none when `interval` is `None`,
//! manual mode); while runs find nothing to do, the period doubles up to
//! `idle_cap` and snaps back as soon as anything changes. A local write
//! schedules a push `debounce` after the last write of a burst (but no
//! later than `max_delay` after its first), so a burst is one push. When the
//! remote is unreachable, retries back off from `offline_min` to
//! `offline_max`, and the first successful run reports the return online.

use std::time::Duration;

use tokio::time::Instant;

/// Timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Period of background syncs; `None`: only after local writes and on request.
    pub interval: Option<Duration>,
    /// Quiet time after a local write before pushing.
    pub debounce: Duration,
    /// A burst of writes is pushed at most this long after its first write.
    pub max_delay: Duration,
    /// The longest the period grows to while idle.
    pub idle_cap: Duration,
    /// First retry delay when the remote is unreachable.
    pub offline_min: Duration,
    /// Longest retry delay when the remote is unreachable.
    pub offline_max: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            interval: Some(Duration::from_secs(30)),
            debounce: Duration::from_millis(300),
            max_delay: Duration::from_secs(2),
            idle_cap: Duration::from_secs(60),
            offline_min: Duration::from_secs(1),
            offline_max: Duration::from_secs(30),
        }
    }
}

/// How a run went, as the schedule needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Something moved (or a conflict or error was found).
    Changed,
    /// Nothing to do.
    Idle,
    /// The remote could not be reached.
    Offline,
}

/// What changed in connectivity with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// No change.
    Same,
    /// The remote just became unreachable.
    WentOffline,
    /// The remote is reachable again.
    CameOnline,
}

/// The schedule's state.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
    period: Option<Duration>,
    next_periodic: Option<Instant>,
    burst_start: Option<Instant>,
    push_at: Option<Instant>,
    offline: bool,
    offline_delay: Duration,
}

impl Schedule {
    /// A schedule whose first sync is due at once.
    pub fn new(cfg: ScheduleConfig, now: Instant) -> Self {
        Schedule {
            cfg,
            period: cfg.interval,
            next_periodic: Some(now),
            burst_start: None,
            push_at: None,
            offline: false,
            offline_delay: cfg.offline_min,
        }
    }

    /// New settings (changed while the engine runs): the period restarts
    /// from `now` under the new interval; a pending push keeps its time
    /// unless the new debounce makes it sooner.
    pub fn set_config(&mut self, cfg: ScheduleConfig, now: Instant) {
        if cfg.interval != self.cfg.interval {
            self.period = cfg.interval;
            if !self.offline {
                self.next_periodic = cfg.interval.map(|p| now + p);
            }
        }
        if let Some(at) = self.push_at {
            self.push_at = Some(at.min(now + cfg.debounce));
        }
        self.cfg = cfg;
    }

    /// True while the remote is believed unreachable.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The current period (grows while idle).
    pub fn period(&self) -> Option<Duration> {
        self.period
    }

    /// A local write happened.
    pub fn on_local_write(&mut self, now: Instant) {
        let start = *self.burst_start.get_or_insert(now);
        let at = (now + self.cfg.debounce).min(start + self.cfg.max_delay);
        self.push_at = Some(at);
        // Activity resets the idle backoff.
        self.period = self.cfg.interval;
    }

    /// When to wake next (`None`: only on events).
    pub fn next_wakeup(&self) -> Option<Instant> {
        match (self.next_periodic, self.push_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True when a sync should start now.
    pub fn is_due(&self, now: Instant) -> bool {
        self.next_wakeup().is_some_and(|t| t <= now)
    }

    /// A sync starts now: pending pushes are covered by it.
    pub fn on_sync_start(&mut self) {
        self.burst_start = None;
        self.push_at = None;
    }

    /// A sync ended with `outcome`; returns the connectivity change.
    pub fn on_sync_done(&mut self, now: Instant, outcome: RunOutcome) -> Connectivity {
        match outcome {
            RunOutcome::Offline => {
                let was = self.offline;
                self.offline = true;
                self.next_periodic = Some(now + self.offline_delay);
                self.offline_delay = (self.offline_delay * 2).min(self.cfg.offline_max);
                if was {
                    Connectivity::Same
                } else {
                    Connectivity::WentOffline
                }
            }
            RunOutcome::Changed | RunOutcome::Idle => {
                let was = self.offline;
                self.offline = false;
                self.offline_delay = self.cfg.offline_min;
                self.period = match (outcome, self.period) {
                    (RunOutcome::Idle, Some(p)) => Some((p * 2).min(self.cfg.idle_cap.max(p))),
                    _ => self.cfg.interval,
                };
                self.next_periodic = self.period.map(|p| now + p);
                if was {
                    Connectivity::CameOnline
                } else {
                    Connectivity::Same
                }
            }
        }
    }
}

//! Periodic checkpoints: when to trigger the next one, on the caller's clock.
//!
//! A [`CheckpointPolicy`] says *when* (every interval, and/or when the dirty bytes pass a
//! threshold, never sooner than a minimum pause after the last one ended, aborting one that
//! runs past a timeout). [`Periodic`] applies it to a [`Store`]: call [`Periodic::poll`] from
//! the processing loop (after each event or batch); it triggers asynchronous checkpoints and
//! reports how they end. [`crate::Coordinator::poll_policy`] applies the same policy to
//! global checkpoints. Time comes from a [`Clock`], so tests drive it by hand.
//!
//! # Choosing the interval
//! - **Data at risk**: after a crash the job restores the last committed checkpoint and
//!   replays its source from the offsets recorded there, so the replay covers about one
//!   interval plus one checkpoint's duration of input. The replay must be possible (the
//!   source keeps that much) and affordable: restart time ≈ restore time + replay time.
//! - **Cost**: each checkpoint writes about the dirty bytes since the previous one (keys
//!   updated several times are written once), plus one fsync and a manifest; a shorter
//!   interval writes more, smaller checkpoints, and more manifests for compaction to fold.
//! - **Rule of thumb**: pick the interval from the recovery time you can accept
//!   (interval ≈ acceptable replay time), then check that a checkpoint takes well under it
//!   ([`crate::CheckpointRecord::end_to_end`]); add a dirty-bytes threshold to bound both the
//!   replay and the size of one checkpoint under bursts; keep a minimum pause so a slow disk
//!   is not saturated by back-to-back checkpoints.

use crate::{CheckpointHandle, CheckpointInfo, Error, Result, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock: time since some fixed origin.
pub trait Clock: Send + Sync {
    /// Time since the clock's origin; never decreases.
    fn now(&self) -> Duration;
}

/// The real monotonic clock ([`Instant`]), from its creation.
#[derive(Clone, Copy, Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock that moves only when told to: for deterministic tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}

/// When to take checkpoints (Flink's `enableCheckpointing` knobs). A checkpoint is due when
/// the interval has passed since the last trigger *or* the dirty bytes reach the threshold,
/// and the minimum pause has passed since the last one ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Trigger every this long (measured from the previous trigger). `None`: no timer.
    pub interval: Option<Duration>,
    /// Trigger when this many key and value bytes are dirty. `None`: no threshold.
    pub dirty_bytes: Option<u64>,
    /// Never trigger sooner than this after the previous checkpoint ended.
    pub min_pause: Duration,
    /// Abort a checkpoint that has not ended this long after its trigger (it stops if it
    /// has not started writing; see [`CheckpointHandle::abort`]). `None`: no timeout.
    pub timeout: Option<Duration>,
}

impl CheckpointPolicy {
    /// A checkpoint every `interval`, no threshold, no pause, no timeout.
    pub fn every(interval: Duration) -> Self {
        CheckpointPolicy { interval: Some(interval), dirty_bytes: None, min_pause: Duration::ZERO, timeout: None }
    }

    /// Also trigger when `bytes` are dirty.
    pub fn or_dirty_bytes(mut self, bytes: u64) -> Self {
        self.dirty_bytes = Some(bytes);
        self
    }

    /// At least `pause` between the end of one checkpoint and the next trigger.
    pub fn min_pause(mut self, pause: Duration) -> Self {
        self.min_pause = pause;
        self
    }

    /// Abort a checkpoint still running `timeout` after its trigger.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether a checkpoint is due at `now`, given the last trigger and end times and the
    /// dirty bytes.
    pub fn is_due(&self, now: Duration, last_trigger: Duration, last_end: Option<Duration>, dirty_bytes: u64) -> bool {
        if last_end.is_some_and(|end| now.saturating_sub(end) < self.min_pause) {
            return false;
        }
        let timer = self.interval.is_some_and(|i| now.saturating_sub(last_trigger) >= i);
        let threshold = self.dirty_bytes.is_some_and(|b| dirty_bytes >= b);
        timer || threshold
    }
}

/// What [`Periodic::poll`] did.
#[derive(Debug)]
pub enum Tick {
    /// Nothing was due, or a checkpoint is still running.
    Idle,
    /// A checkpoint was triggered (its `seq`).
    Triggered(u64),
    /// The running checkpoint ran past the timeout and was asked to abort.
    TimedOut,
    /// The running checkpoint committed.
    Completed(CheckpointInfo),
    /// The running checkpoint did not commit (aborted, or failed).
    NotCommitted(Error),
}

/// Applies a [`CheckpointPolicy`] to one store, one checkpoint at a time.
pub struct Periodic<C: Clock> {
    policy: CheckpointPolicy,
    clock: C,
    last_trigger: Duration,
    last_end: Option<Duration>,
    running: Option<(CheckpointHandle, Duration, bool)>,
}

impl<C: Clock> Periodic<C> {
    /// Start applying `policy`; the first interval counts from now.
    pub fn new(policy: CheckpointPolicy, clock: C) -> Self {
        let now = clock.now();
        Periodic { policy, clock, last_trigger: now, last_end: None, running: None }
    }

    /// Whether a checkpoint it triggered is still running.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Check the running checkpoint, or trigger one on `store` if due; `metadata` is asked
    /// for only when a checkpoint is triggered. Never blocks on I/O.
    pub fn poll(&mut self, store: &Store, metadata: impl FnOnce() -> Vec<u8>) -> Result<Tick> {
        let now = self.clock.now();
        if let Some((handle, triggered, abort_sent)) = self.running.take() {
            if handle.is_finished() {
                self.last_end = Some(now);
                return Ok(match handle.wait() {
                    Ok(info) => Tick::Completed(info),
                    Err(e) => Tick::NotCommitted(e),
                });
            }
            let late = self.policy.timeout.is_some_and(|t| now.saturating_sub(triggered) >= t);
            if late && !abort_sent {
                handle.abort();
                self.running = Some((handle, triggered, true));
                return Ok(Tick::TimedOut);
            }
            self.running = Some((handle, triggered, abort_sent));
            return Ok(Tick::Idle);
        }
        if !self.policy.is_due(now, self.last_trigger, self.last_end, store.dirty_bytes()?) {
            return Ok(Tick::Idle);
        }
        let handle = store.checkpoint_async(&metadata())?;
        let seq = handle.seq();
        self.last_trigger = now;
        self.running = Some((handle, now, false));
        Ok(Tick::Triggered(seq))
    }

    /// Wait for the running checkpoint, if any, and return how it ended.
    pub fn finish(&mut self) -> Option<Result<CheckpointInfo>> {
        let (handle, _, _) = self.running.take()?;
        self.last_end = Some(self.clock.now());
        Some(handle.wait())
    }
}

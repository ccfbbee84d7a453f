//! Background compaction ([`crate::Options::background_compaction`]): one thread per store
//! that runs [`Store::compact`] after checkpoints commit.
//!
//! Requests go over a one-slot channel: a request made while one waits is dropped, so a burst
//! of checkpoints asks for one more compaction, not one each. Compaction takes the store's
//! locks step by step like a caller's compaction does (see `maintenance.rs`), so checkpoints
//! and writes go on beside it; its write rate can be bounded
//! ([`crate::Options::compaction_bytes_per_sec`]).

use super::{Done, Shared, Store};
use crate::{Error, Result};
use crossbeam_channel::{Sender, TrySendError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub(crate) struct Compactor {
    tx: Option<Sender<Arc<Shared>>>,
    thread: Option<JoinHandle<()>>,
    /// Compactions requested and not yet finished.
    outstanding: Arc<AtomicUsize>,
}

impl Compactor {
    pub(crate) fn start() -> Result<Compactor> {
        let (tx, rx) = crossbeam_channel::bounded::<Arc<Shared>>(1);
        let outstanding = Arc::new(AtomicUsize::new(0));
        let finished = outstanding.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-compact".into())
            .spawn(move || {
                for shared in rx {
                    let span = tracing::info_span!("cairn.background_compaction");
                    let _entered = span.enter();
                    // A handle without a pipeline: compaction needs none.
                    let store = Store { shared, pipeline: None, compactor: None };
                    // A panic (a bug, or memory exhaustion) fails this compaction and poisons
                    // the store, as a checkpoint's does (see `pipeline::run`), rather than
                    // ending this thread with the compaction counted as running for ever,
                    // which `Store::quiesce` would wait for.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.compact()))
                        .unwrap_or_else(|panic| {
                            Err(Error::Poisoned(format!(
                                "a background compaction panicked: {}",
                                super::pipeline::panic_message(panic.as_ref())
                            )))
                        });
                    let outcome = result.as_ref().err().map(Error::to_string);
                    if let Some(e) = &outcome {
                        tracing::warn!(error = %e, "background compaction failed");
                    }
                    if let Ok(mut inner) = store.shared.lock() {
                        if let Err(e @ Error::Poisoned(_)) = &result {
                            inner.poison(e);
                        }
                        inner.last_auto_compact_error = outcome;
                    }
                    finished.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .map_err(|e| Error::io("spawn", "the background compaction thread", e))?;
        Ok(Compactor { tx: Some(tx), thread: Some(thread), outstanding })
    }

    /// Whether no compaction is requested or running.
    pub(crate) fn idle(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0
    }

    /// A notification for a checkpoint job: once it commits, ask for a compaction.
    pub(crate) fn request_after(&self, shared: Arc<Shared>) -> Option<Done> {
        let tx = self.tx.clone()?;
        let outstanding = self.outstanding.clone();
        Some(Box::new(move |result| {
            if result.is_ok() {
                // Counted before it is sent, so `idle` never misses it.
                outstanding.fetch_add(1, Ordering::SeqCst);
                match tx.try_send(shared) {
                    Ok(()) => {}
                    // One is queued already: it runs after this commit and covers it.
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }))
    }
}

impl Drop for Compactor {
    /// Let a running or requested compaction end, then stop the thread.
    fn drop(&mut self) {
        super::stop_worker(&mut self.tx, &mut self.thread);
    }
}

//! Which checkpoints stay.

use crate::format::{CheckpointId, ManifestKind};
use std::collections::BTreeSet;
use std::time::Duration;

/// Which checkpoints compaction keeps. A checkpoint stays if *any* rule keeps it; the HEAD
/// checkpoint, the two checkpoints before it on its chain (its parent and grandparent),
/// pinned savepoints and checkpoints held by an open [`crate::CheckpointView`] are always
/// kept.
///
/// Compaction checkpoints (the merged layout of their parent) do not count towards
/// `keep_last`; one stays while it is HEAD, pinned, held by a view or young enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest N checkpoints (default 10). `None`: keep all.
    pub keep_last: Option<usize>,
    /// Keep every checkpoint younger than this (default: no such rule).
    pub keep_younger_than: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_last: Some(10), keep_younger_than: None }
    }
}

impl Retention {
    /// Keep everything (no checkpoint is ever removed by compaction).
    pub fn keep_all() -> Self {
        Retention { keep_last: None, keep_younger_than: None }
    }

    /// Keep the newest `n` checkpoints (and those the always-kept rules keep).
    pub fn keep_last(n: usize) -> Self {
        Retention { keep_last: Some(n), keep_younger_than: None }
    }

    /// Also keep every checkpoint younger than `age`.
    pub fn and_younger_than(mut self, age: Duration) -> Self {
        self.keep_younger_than = Some(age);
        self
    }
}

/// One committed checkpoint as retention sees it.
pub(crate) struct Candidate {
    pub(crate) id: CheckpointId,
    pub(crate) kind: ManifestKind,
    pub(crate) created_unix_ms: u64,
}

/// The checkpoints to keep among `all`.
pub(crate) fn select_retained(
    all: &[Candidate],
    policy: &Retention,
    always: &BTreeSet<CheckpointId>,
    now_unix_ms: u64,
) -> BTreeSet<CheckpointId> {
    let mut keep: BTreeSet<CheckpointId> =
        always.iter().copied().filter(|id| all.iter().any(|c| c.id == *id)).collect();
    let mut checkpoints: Vec<&Candidate> = all.iter().filter(|c| c.kind == ManifestKind::Checkpoint).collect();
    checkpoints.sort_by_key(|c| std::cmp::Reverse(c.id));
    match policy.keep_last {
        Some(n) => keep.extend(checkpoints.iter().take(n).map(|c| c.id)),
        None => keep.extend(all.iter().map(|c| c.id)),
    }
    if let Some(age) = policy.keep_younger_than {
        let cutoff = now_unix_ms.saturating_sub(age.as_millis() as u64);
        keep.extend(all.iter().filter(|c| c.created_unix_ms >= cutoff).map(|c| c.id));
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, kind: ManifestKind, created: u64) -> Candidate {
        Candidate { id: CheckpointId(id), kind, created_unix_ms: created }
    }

    #[test]
    fn rules_keep_the_union_and_compactions_do_not_count() {
        let all = [
            c(1, ManifestKind::Checkpoint, 100),
            c(2, ManifestKind::Checkpoint, 200),
            c(3, ManifestKind::Compaction, 210),
            c(4, ManifestKind::Checkpoint, 300),
            c(5, ManifestKind::Checkpoint, 400),
        ];
        let always = BTreeSet::from([CheckpointId(3), CheckpointId(99)]);
        let kept = select_retained(&all, &Retention::keep_last(2), &always, 1000);
        assert_eq!(kept, BTreeSet::from([CheckpointId(3), CheckpointId(4), CheckpointId(5)]));
        let kept = select_retained(
            &all,
            &Retention::keep_last(1).and_younger_than(Duration::from_millis(850)),
            &BTreeSet::new(),
            1000,
        );
        assert_eq!(kept, BTreeSet::from([CheckpointId(2), CheckpointId(3), CheckpointId(4), CheckpointId(5)]));
        assert_eq!(select_retained(&all, &Retention::keep_all(), &BTreeSet::new(), 0).len(), 5);
        assert!(select_retained(&all, &Retention::keep_last(0), &BTreeSet::new(), 0).is_empty());
    }
}

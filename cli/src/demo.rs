//! `cairn demo`: a stateful stream job on the embedded store, to show checkpoints, crashes and
//! resumption end to end.
//!
//! The source is a deterministic, replayable stream of words: event `i` (numbered from 0) is
//! the word [`word_of`]`(i)`. The job counts words in table [`TABLE`] (key: the word's UTF-8
//! bytes, value: the count as a u64 little-endian) and takes a checkpoint whenever the offset
//! (the number of events consumed) reaches a multiple of `--checkpoint-every`. Each
//! checkpoint's metadata is the offset as decimal ASCII (e.g. `30000`).
//!
//! Exactly-once: the head checkpoint's state reflects precisely the events before its offset,
//! so a restart restores it and replays the source from that offset. Writes made after the
//! last checkpoint are lost in a crash and simply replayed.

use crate::show;
use crate::{emit, CliError};
use cairn::{CheckpointId, Store};
use std::path::Path;

/// The table the job keeps its counts in.
pub const TABLE: &str = "counts";

/// Number of distinct words the source draws from.
const VOCABULARY_LEN: u64 = 300;

/// Words are one to three of these syllables.
const SYLLABLES: [&str; 16] =
    ["ka", "lo", "mi", "nu", "pe", "ra", "so", "ti", "va", "ze", "bo", "du", "fi", "go", "hu", "je"];

/// What `cairn demo` was asked to do.
pub struct DemoArgs<'a> {
    /// The store directory.
    pub dir: &'a Path,
    /// Total events in the source; the job stops at this offset.
    pub events: u64,
    /// Checkpoint whenever the offset is a multiple of this (at least 1).
    pub checkpoint_every: u64,
    /// Abort the process after processing this many events in this run.
    pub crash_after: Option<u64>,
}

/// The splitmix64 finalizer: a fixed, well-mixed hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word number `n` of the vocabulary (`n` < [`VOCABULARY_LEN`]); distinct `n` give distinct words.
fn word(n: u64) -> String {
    let syllable = |digit: u64| SYLLABLES.get((digit % 16) as usize).copied().unwrap_or("x");
    let mut w = String::from(syllable(n));
    let mut rest = n / 16;
    // Base-16 digits after the first, so the spelling is unique for every `n`.
    while rest > 0 {
        w.push_str(syllable(rest - 1));
        rest = (rest - 1) / 16;
    }
    w
}

/// The event at source offset `i`: a word whose frequency falls off with its vocabulary
/// number (the smaller of two uniform draws), so counts are uneven like real text.
pub fn word_of(i: u64) -> String {
    let h = mix(i);
    word((h % VOCABULARY_LEN).min((h >> 32) % VOCABULARY_LEN))
}

/// The source offset a checkpoint's metadata records (decimal ASCII).
pub(crate) fn parse_offset(id: CheckpointId, metadata: &[u8]) -> Result<u64, CliError> {
    std::str::from_utf8(metadata).ok().and_then(|s| s.parse::<u64>().ok()).ok_or_else(|| {
        CliError::from(format!(
            "head checkpoint {id} has metadata {} instead of a decimal source offset; \
             it was not written by `cairn demo`",
            show::bytes_short(metadata, 64)
        ))
    })
}

pub(crate) fn count_of(word: &str, value: &[u8]) -> Result<u64, CliError> {
    <[u8; 8]>::try_from(value).map(u64::from_le_bytes).map_err(|_| {
        CliError::from(format!(
            "table {TABLE:?} key {word:?} holds {}, not a u64 little-endian count",
            show::bytes_short(value, 16)
        ))
    })
}

pub(crate) fn crash(processed: u64, offset: u64) -> ! {
    eprintln!("crash: aborting after {processed} events in this run (offset {offset}), without a final checkpoint");
    std::process::abort()
}

/// Run the job; prints progress, the checkpoint log and the `keys=<n> digest=<hex>` line.
pub fn run(args: &DemoArgs<'_>) -> Result<(), CliError> {
    let store = Store::open(args.dir)?;
    let head = store.head()?;
    let start = match &head {
        Some(h) => {
            let offset = parse_offset(h.id, &h.metadata)?;
            emit(&format!("{}: resuming from checkpoint {} at offset {offset}", store.location(), h.id))?;
            offset
        }
        None => {
            emit(&format!("{}: no checkpoint yet, starting at offset 0", store.location()))?;
            0
        }
    };
    if start > args.events {
        return Err(CliError::from(format!(
            "the head checkpoint is at offset {start}, past --events {}; use a fresh DIR or more --events",
            args.events
        )));
    }
    let counts = store.table(TABLE)?;
    if args.crash_after == Some(0) {
        crash(0, start);
    }

    let mut offset = start;
    let mut checkpointed_offset = start;
    let mut processed = 0u64;
    let mut taken = 0u64;
    while offset < args.events {
        let w = word_of(offset);
        let n = match counts.get(w.as_bytes())? {
            Some(v) => count_of(&w, &v)?,
            None => 0,
        };
        counts.put(w.as_bytes(), &(n + 1).to_le_bytes())?;
        offset += 1;
        processed += 1;
        // Checkpoints fall on absolute offsets, so a resumed run takes the same ones.
        if offset.is_multiple_of(args.checkpoint_every) {
            let info = store.checkpoint(offset.to_string().as_bytes())?;
            emit(&format!("checkpoint {} at offset {offset}", info.id))?;
            checkpointed_offset = offset;
            taken += 1;
        }
        if args.crash_after == Some(processed) {
            crash(processed, offset);
        }
    }
    if store.stats()?.dirty_keys > 0 || offset != checkpointed_offset {
        let info = store.checkpoint(offset.to_string().as_bytes())?;
        emit(&format!("final checkpoint {} at offset {offset}", info.id))?;
        taken += 1;
    }
    emit(&format!("processed {processed} events (offsets {start}..{offset}), took {taken} checkpoints\n"))?;

    let head_id = store.head()?.map(|h| h.id);
    emit(show::log(&store.checkpoints()?, head_id).trim_end())?;
    let (keys, digest) = digest(&store)?;
    emit(&format!("keys={keys} digest={}", show::hex(&digest)))
}

/// The number of pairs in the working state, and an order-independent digest of them: the
/// lane-wise wrapping sum (four u64 little-endian lanes) of blake3(table name length (u64 LE)
/// || table name || key length (u64 LE) || key || value) over every pair of every table.
/// Two states have the same digest exactly when (barring hash collisions) they hold the same
/// pairs, whatever order they were written or are iterated in.
pub fn digest(store: &Store) -> Result<(u64, [u8; 32]), CliError> {
    digest_stores(&[store])
}

/// [`digest`] of the union of several stores' pairs (shards partition the keys, so this
/// equals the digest of one store holding them all).
pub fn digest_stores(stores: &[&Store]) -> Result<(u64, [u8; 32]), CliError> {
    let mut keys = 0u64;
    let mut lanes = [0u64; 4];
    let mut tables = Vec::new();
    for store in stores {
        for name in store.tables()? {
            tables.push((*store, name));
        }
    }
    for (store, name) in tables {
        for (k, v) in store.table(&name)?.iter_all()? {
            let mut h = blake3::Hasher::new();
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(&k);
            h.update(&v);
            let hash = h.finalize();
            for (lane, bytes) in lanes.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
                let mut le = [0u8; 8];
                le.copy_from_slice(bytes);
                *lane = lane.wrapping_add(u64::from_le_bytes(le));
            }
            keys += 1;
        }
    }
    let mut out = [0u8; 32];
    for (bytes, lane) in out.chunks_exact_mut(8).zip(lanes) {
        bytes.copy_from_slice(&lane.to_le_bytes());
    }
    Ok((keys, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn vocabulary_words_are_distinct() {
        let words: HashSet<String> = (0..VOCABULARY_LEN).map(word).collect();
        assert_eq!(words.len() as u64, VOCABULARY_LEN);
    }

    #[test]
    fn source_is_deterministic_and_varied() {
        let a: Vec<String> = (0..1000).map(word_of).collect();
        let b: Vec<String> = (0..1000).map(word_of).collect();
        assert_eq!(a, b);
        assert!(a.iter().collect::<HashSet<_>>().len() > 100);
    }

    #[test]
    fn offsets_parse_only_from_decimal() {
        assert_eq!(parse_offset(CheckpointId(1), b"30000").ok(), Some(30000));
        assert!(parse_offset(CheckpointId(1), b"offset=3").is_err());
        assert!(parse_offset(CheckpointId(1), &[0xff]).is_err());
    }
}

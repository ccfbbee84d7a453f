//! `cairn demo --shards N`: the word-count job of `demo.rs`, partitioned over N shards under a
//! [`Coordinator`], each shard on its own thread.
//!
//! The source thread reads the same deterministic stream, routes each word to the shard that
//! owns it (a fixed hash of the word), and at every multiple of `--checkpoint-every` triggers
//! an epoch (numbered by the offset, with the offset as decimal ASCII as its metadata) and
//! sends each shard its barrier in band, behind the events before it. Each shard checkpoints
//! when its barrier arrives; the coordinator commits the global checkpoint once all have.
//! Epochs are pipelined by one: the source keeps reading while the previous epoch persists.
//!
//! Exactly-once: a restart restores every shard to the last global checkpoint and replays the
//! source from its offset. The shards partition the words, so the union of their states
//! equals the single-store job's state after the same events: the `keys= digest=` line is
//! comparable with `cairn demo` without `--shards`.

use crate::demo::{self, DemoArgs, TABLE};
use crate::{emit, CliError};
use cairn::{Barrier, Coordinator, CoordinatorOptions, Shard, Store};
use std::sync::mpsc;

/// Events a source sends a shard at once.
const BATCH: usize = 1024;

enum Msg {
    Words(Vec<String>),
    Barrier(Barrier),
}

/// The shard that owns `word`: FNV-1a of its bytes, modulo the shard count.
fn shard_of(word: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in word.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

/// A shard's thread: apply words, checkpoint at barriers.
fn shard_loop(shard: &Shard, input: &mpsc::Receiver<Msg>) -> Result<(), CliError> {
    let counts = shard.store().table(TABLE)?;
    for msg in input {
        match msg {
            Msg::Words(words) => {
                for w in words {
                    let n = match counts.get(w.as_bytes())? {
                        Some(v) => demo::count_of(&w, &v)?,
                        None => 0,
                    };
                    counts.put(w.as_bytes(), &(n + 1).to_le_bytes())?;
                }
            }
            // The handle is dropped: the outcome reaches the coordinator.
            Msg::Barrier(b) => drop(shard.checkpoint(&b, &[])?),
        }
    }
    Ok(())
}

/// Trigger the epoch of `offset` and send each shard its barrier behind the events before
/// it; then wait for the previous epoch (epochs are pipelined by one), now `previous`.
fn start_epoch(
    coord: &mut Coordinator,
    inputs: &[mpsc::SyncSender<Msg>],
    offset: u64,
    previous: &mut Option<u64>,
) -> Result<(), CliError> {
    for (b, input) in coord.trigger(offset, offset.to_string().as_bytes())?.into_iter().zip(inputs) {
        input.send(Msg::Barrier(b)).map_err(|_| gone())?;
    }
    match previous.replace(offset) {
        Some(prev) => finish_epoch(coord, prev),
        None => Ok(()),
    }
}

fn gone() -> CliError {
    CliError::from("a shard thread stopped; its error follows when it is joined".to_string())
}

/// Wait for `epoch` and print it.
fn finish_epoch(coord: &mut Coordinator, epoch: u64) -> Result<(), CliError> {
    let global = coord.wait(epoch)?;
    emit(&format!("global checkpoint {} at offset {epoch}", global.id))
}

/// Run the sharded job; prints progress, the global checkpoint log and `keys= digest=`.
pub fn run(args: &DemoArgs<'_>, shard_count: usize) -> Result<(), CliError> {
    let (mut coord, shards) = Coordinator::open(args.dir, CoordinatorOptions::new(shard_count))?;
    let last = coord.last().clone();
    let start = if last.epoch == 0 {
        emit(&format!("{}: {shard_count} shards, no global checkpoint yet, starting at offset 0", args.dir.display()))?;
        0
    } else {
        let offset = demo::parse_offset(last.id, &last.metadata)?;
        emit(&format!(
            "{}: {shard_count} shards, resuming from global checkpoint {} (epoch {}) at offset {offset}",
            args.dir.display(),
            last.id,
            last.epoch
        ))?;
        offset
    };
    if start > args.events {
        return Err(CliError::from(format!(
            "the last global checkpoint is at offset {start}, past --events {}; use a fresh DIR or more --events",
            args.events
        )));
    }
    if args.crash_after == Some(0) {
        demo::crash(0, start);
    }
    let stores: Vec<std::sync::Arc<Store>> = shards.iter().map(|s| s.store().clone()).collect();
    let mut inputs = Vec::with_capacity(shard_count);
    let mut threads = Vec::with_capacity(shard_count);
    for shard in shards {
        let (tx, rx) = mpsc::sync_channel::<Msg>(64);
        inputs.push(tx);
        threads.push(std::thread::spawn(move || shard_loop(&shard, &rx)));
    }
    let mut buffers: Vec<Vec<String>> = vec![Vec::new(); shard_count];
    let flush = |buffers: &mut Vec<Vec<String>>, inputs: &[mpsc::SyncSender<Msg>]| -> Result<(), CliError> {
        for (buf, input) in buffers.iter_mut().zip(inputs) {
            if !buf.is_empty() {
                input.send(Msg::Words(std::mem::take(buf))).map_err(|_| gone())?;
            }
        }
        Ok(())
    };
    let mut offset = start;
    let mut processed = 0u64;
    let mut previous: Option<u64> = None;
    let mut taken = 0u64;
    let result = (|| -> Result<(), CliError> {
        while offset < args.events {
            let w = demo::word_of(offset);
            let s = shard_of(&w, shard_count);
            if let Some(buf) = buffers.get_mut(s) {
                buf.push(w);
                if buf.len() >= BATCH {
                    if let Some(input) = inputs.get(s) {
                        input.send(Msg::Words(std::mem::take(buf))).map_err(|_| gone())?;
                    }
                }
            }
            offset += 1;
            processed += 1;
            if offset.is_multiple_of(args.checkpoint_every) {
                flush(&mut buffers, &inputs)?;
                start_epoch(&mut coord, &inputs, offset, &mut previous)?;
                taken += 1;
            }
            if args.crash_after == Some(processed) {
                demo::crash(processed, offset);
            }
        }
        flush(&mut buffers, &inputs)?;
        if offset != start && previous != Some(offset) {
            start_epoch(&mut coord, &inputs, offset, &mut previous)?;
            taken += 1;
        }
        if let Some(prev) = previous.take() {
            finish_epoch(&mut coord, prev)?;
        }
        Ok(())
    })();
    drop(inputs);
    for t in threads {
        t.join().map_err(|_| CliError::from("a shard thread panicked".to_string()))??;
    }
    result?;
    emit(&format!(
        "processed {processed} events (offsets {start}..{offset}) on {shard_count} shards, took {taken} global checkpoints\n"
    ))?;
    for g in coord.checkpoints()?.iter().rev().take(5).rev() {
        let ids: Vec<String> = g.shards.iter().map(|p| p.id.to_string()).collect();
        emit(&format!("global {} epoch {} shards [{}]", g.id, g.epoch, ids.join(" ")))?;
    }
    let refs: Vec<&Store> = stores.iter().map(|s| s.as_ref()).collect();
    let (keys, digest) = demo::digest_stores(&refs)?;
    emit(&format!("keys={keys} digest={}", crate::show::hex(&digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_spread_over_every_shard() {
        let mut seen = [0u32; 4];
        for i in 0..10_000 {
            seen[shard_of(&demo::word_of(i), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
    }
}

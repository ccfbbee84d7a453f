//! `cairn`: run the demo stream job on a store, and inspect, verify, roll back, pin and compact
//! stores.
//!
//! Every command but `demo` opens the store with `create_if_missing(false)`, so a wrong path
//! creates nothing. Errors are one line on stderr (`error: ...`) and a nonzero exit status:
//! 1 for an error or a failed verification, 2 for a malformed command line.

mod bench;
mod commands;
mod demo;
mod maintenance;
mod sharded;
mod show;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Run the cairn demo job, and inspect, verify, roll back, pin and compact cairn stores.",
    long_about = "Run the cairn demo job, and inspect, verify, roll back, pin and compact cairn stores.\n\n\
        A store is a directory holding keyed tables and a chain of checkpoints. Every command \
        except `demo` refuses a directory that holds no store and then changes nothing on disk."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the standard benchmark workload on the real filesystem, with the machine's floor
    /// measured in the same run.
    #[command(long_about = "Run the standard benchmark workload (../shared/BENCH.md) end to end on the \
        real filesystem, with the machine's floor measured in the same run.\n\n\
        Loads S keys (16-byte keys, 100-byte values) and checkpoints; runs R rounds of D updates \
        and one durable checkpoint each; then reopens the store and reads every key back against \
        an order-independent checksum. The floor is the median 4 KiB append + fsync, sequential \
        write bandwidth (256 MiB, one fsync) and D updates of a HashMap; the restore is compared \
        with a full snapshot of the same S pairs read into a HashMap. Prints a table of figures \
        with their ratio to the floor or that baseline; with --json, one JSON object as the last \
        line. \
        Works in a fresh directory (default ./cairn-bench-<pid>) that it removes at the end.")]
    Bench {
        /// Keys of state (S). A run holds at least 220 bytes a key at its peak; one that could
        /// not fit in the machine's memory is refused.
        #[arg(long, value_name = "S", default_value_t = 1_000_000)]
        keys: u64,
        /// Keys updated per round (D).
        #[arg(long, value_name = "D", default_value_t = 10_000)]
        dirty: u64,
        /// Rounds of updates and a checkpoint (R).
        #[arg(long, value_name = "R", default_value_t = 20)]
        rounds: u64,
        /// Choose updated keys with a Zipf distribution of this exponent (finite, at least 0;
        /// e.g. 0.99) instead of uniformly.
        #[arg(long, value_name = "X")]
        zipf: Option<f64>,
        /// Also print the figures as one JSON object on the last line.
        #[arg(long)]
        json: bool,
        /// Directory to work in; must not exist (it is removed at the end).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Compact in the background during the rounds (default retention and run bound),
        /// writing at most MB megabytes per second on average (0: unbounded).
        #[arg(long, value_name = "MB")]
        background_compaction: Option<u64>,
        /// With --background-compaction: merge a table's base this many key-range slices at a
        /// time (1: the whole base; see `Options::merge_slices`).
        #[arg(long, value_name = "N", default_value_t = cairn::Options::DEFAULT_MERGE_SLICES)]
        merge_slices: usize,
    },
    /// Print the HashMap floor of `cairn bench` (median ms of D updates), measured in its own
    /// process; `cairn bench` runs it.
    #[command(name = "bench-hashmap-floor", hide = true)]
    BenchHashmapFloor {
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        dirty: u64,
        #[arg(long)]
        rounds: u64,
        #[arg(long)]
        zipf: Option<f64>,
    },
    /// Print the full-snapshot restore baseline of `cairn bench` (seconds to read a snapshot
    /// of S keys into a HashMap and get one key, then to get every key), measured in its own
    /// process on a snapshot it writes in DIR and removes; `cairn bench` runs it.
    #[command(name = "bench-snapshot-floor", hide = true)]
    BenchSnapshotFloor {
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run a word-count stream job on a store, resuming from its head checkpoint.
    #[command(long_about = "Run a word-count stream job on a store, resuming from its head checkpoint.\n\n\
        The source is a deterministic stream of words (event i is a word derived from i, events \
        numbered from 0). The job counts words in table \"counts\" (key: the word, value: the count \
        as a u64 little-endian) and takes a checkpoint whenever the offset (events consumed) reaches a \
        multiple of --checkpoint-every, with the offset as decimal ASCII as the checkpoint's metadata. \
        If the store has a head checkpoint, the job restores it and replays the source from its \
        offset, so a crashed run followed by a rerun ends in the same state as one uninterrupted run.\n\n\
        At the end it takes a final checkpoint, prints the checkpoint log and a last line \
        `keys=<n> digest=<hex>`: the number of pairs in the state and an order-independent digest of \
        them (the lane-wise wrapping sum of blake3 over each pair with its table name).")]
    Demo {
        /// Store directory; created if it does not exist.
        #[arg(default_value = "./cairn-data")]
        dir: PathBuf,
        /// Number of events in the source: the job stops at this offset.
        #[arg(long, value_name = "N", default_value_t = 100_000)]
        events: u64,
        /// Take a checkpoint whenever the offset reaches a multiple of N.
        #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        checkpoint_every: u64,
        /// Simulate a crash: abort the process after processing N events in this run (counted from
        /// where this run started) without a final checkpoint; a periodic checkpoint due at that very
        /// event is taken first. If N exceeds the events left, the run completes normally.
        #[arg(long, value_name = "N")]
        crash_after: Option<u64>,
        /// Partition the job over N shards (1 to 64), each on its own thread with its own store
        /// under DIR, checkpointed together by a coordinator (global checkpoints at the same
        /// offsets). The final `keys= digest=` line equals the unsharded job's after as many events.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
        shards: Option<u64>,
    },
    /// Print the checkpoints of a store, oldest first, marking the head with `*`.
    #[command(long_about = "Print the checkpoints of a store, oldest first, one line each: id, parent \
        (`-` for the first), kind, creation time (UTC), dirty keys written, bytes written (segment, \
        manifest and HEAD), chunks new and reused, duration, and metadata (quoted text if printable, \
        else 0x and hex). The kind is `checkpoint` for a checkpoint of the working state and \
        `compaction` for one `cairn compact` made: its parent's content and metadata in fewer runs. \
        The head, the checkpoint the working state is based on, is marked with `*`. Branches left by \
        rollbacks are listed too; follow the parent column to walk one (a parent that compaction or \
        `cairn delete` removed is no longer listed).")]
    Log {
        /// Store directory.
        dir: PathBuf,
    },
    /// Read back and verify every committed checkpoint and segment; exit 1 on any problem.
    #[command(long_about = "Read back and verify every committed checkpoint and segment: HEAD, every \
        manifest (hash, invariants, parent link), every run and chunk it references, and every chunk of \
        every segment (blake3). Prints what was checked and each problem by object. Changes nothing; \
        exits 1 if any problem was found. Verification is always deep (every chunk is re-hashed); \
        --deep is accepted so scripts can ask for that explicitly.")]
    Verify {
        /// Store directory.
        dir: PathBuf,
        /// Re-hash every chunk of every committed checkpoint and segment (always done).
        #[arg(long)]
        deep: bool,
    },
    /// Make checkpoint ID the working state and head again (durably).
    #[command(long_about = "Make checkpoint ID the working state and head again, durably. The next \
        checkpoint's parent is ID, starting a new branch; the checkpoints after ID on the old branch stay \
        readable with `cairn get --at`. Writes not yet checkpointed are discarded.")]
    Rollback {
        /// Store directory.
        dir: PathBuf,
        /// Checkpoint id, as shown by `cairn log`.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Print figures about a store, its pins, and the keys and runs of each table.
    #[command(long_about = "Print figures about a store: head, tables, keys, checkpoints, segments, \
        chunks, runs at the head, bytes on disk, live bytes (raw bytes of the distinct chunks the stored \
        checkpoints reference), space amplification (bytes on disk / live bytes), bytes compaction \
        rewrote since this open (always 0 here: `stat` opens the store afresh), pins; then each pin \
        (name -> checkpoint) and each table with its keys and its runs at the head (what a restore \
        reads). Changes nothing.")]
    Stat {
        /// Store directory.
        dir: PathBuf,
    },
    /// Print the value of KEY in TABLE, from the working state or from a checkpoint.
    #[command(long_about = "Print the value of KEY in TABLE, from the working state (the head \
        checkpoint) or, with --at, from any committed checkpoint. A value that is printable UTF-8 is \
        printed as text; any other value as 0x and hex, and an 8-byte one also as a u64 little-endian \
        number. Exits 1 if the key has no value.")]
    Get {
        /// Store directory.
        dir: PathBuf,
        /// Table name.
        table: String,
        /// Key, as UTF-8 text (or hex with --hex).
        key: String,
        /// Read at checkpoint ID (see `cairn log`) instead of the working state.
        #[arg(long, value_name = "ID", allow_hyphen_values = true)]
        at: Option<String>,
        /// KEY is hex (e.g. 00ff or 0x00ff) rather than text.
        #[arg(long)]
        hex: bool,
    },
    /// Merge runs, drop old checkpoints and reclaim the space they held.
    #[command(long_about = "Compact a store: merge the runs of every table that has more than 8 at \
        the head into a new `compaction` checkpoint (same content and metadata as the head, which it \
        becomes), delete the checkpoints the retention rule drops, then delete the segments no \
        remaining checkpoint needs and rewrite those that are mostly dead. Every remaining checkpoint \
        reads exactly as before.\n\n\
        Retention: the newest 10 checkpoints (not counting compaction checkpoints) by default, the \
        newest N with --keep N, or all with --keep-all. The head and pinned checkpoints (see `cairn \
        pin`) are always kept, whatever the rule says, so --keep 0 keeps just those.\n\n\
        Shows a spinner with the current step on stderr when stderr is a terminal, then prints what \
        was done and the bytes on disk before and after. An interrupted compaction loses nothing; \
        run it again to finish.")]
    Compact {
        /// Store directory.
        dir: PathBuf,
        /// Keep the newest N checkpoints (besides the head and pins) instead of 10.
        #[arg(long, value_name = "N")]
        keep: Option<usize>,
        /// Keep every checkpoint: only merge runs and collect garbage.
        #[arg(long)]
        keep_all: bool,
    },
    /// Pin checkpoint ID as the savepoint NAME, so compaction keeps it.
    #[command(long_about = "Pin checkpoint ID as the savepoint NAME (1 to 255 bytes of UTF-8), durably. \
        Compaction never removes a pinned checkpoint and `cairn delete` refuses it. Pinning a name that \
        exists moves it to ID. `cairn stat` lists the pins.")]
    Pin {
        /// Store directory.
        dir: PathBuf,
        /// Checkpoint id, as shown by `cairn log`.
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// Name of the savepoint.
        name: String,
    },
    /// Remove the pin NAME (the checkpoint itself stays until compaction drops it).
    #[command(long_about = "Remove the pin NAME, durably. The checkpoint it named stays until a \
        compaction's retention rule drops it. Exits 1 if there is no such pin.")]
    Unpin {
        /// Store directory.
        dir: PathBuf,
        /// Name of the savepoint, as listed by `cairn stat`.
        name: String,
    },
    /// Delete checkpoint ID now; `cairn compact` reclaims its space.
    #[command(long_about = "Delete checkpoint ID now, durably. The head (roll back elsewhere first) and \
        pinned checkpoints (unpin them first) are refused. The checkpoint's segment stays until the next \
        `cairn compact`, which deletes what no remaining checkpoint needs. Checkpoints whose parent it \
        was keep reading as before.")]
    Delete {
        /// Store directory.
        dir: PathBuf,
        /// Checkpoint id, as shown by `cairn log`.
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
}

/// A failure to report: one line on stderr and exit status 1 (2 for [`CliError::Usage`]).
#[derive(Debug)]
pub enum CliError {
    /// Something to say to the user.
    Message(String),
    /// A malformed command line that clap's rules do not catch; exit status 2.
    Usage(String),
    /// Stdout was closed (e.g. piped into `head`): stop quietly.
    BrokenPipe,
}

impl From<String> for CliError {
    fn from(message: String) -> Self {
        CliError::Message(message)
    }
}

impl From<cairn::Error> for CliError {
    fn from(e: cairn::Error) -> Self {
        CliError::Message(e.to_string())
    }
}

/// Print `text` and a newline on stdout, reporting (rather than panicking on) a closed stdout.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => CliError::BrokenPipe,
        _ => CliError::Message(format!("writing to stdout: {e}")),
    })
}

fn run(cli: Cli) -> Result<bool, CliError> {
    match cli.command {
        Command::Bench { keys, dirty, rounds, zipf, json, dir, background_compaction, merge_slices } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(format!("cairn-bench-{}", std::process::id())));
            let background_compaction_mb_per_s = background_compaction;
            let args =
                bench::BenchArgs { keys, dirty, rounds, zipf, json, dir, background_compaction_mb_per_s, merge_slices };
            bench::bench(&args)?
        }
        Command::BenchHashmapFloor { keys, dirty, rounds, zipf } => {
            emit(&format!("{}", bench::hashmap_floor(keys, dirty, rounds, zipf)))?;
        }
        Command::BenchSnapshotFloor { keys, dir } => {
            let (first_get_s, total_s) = bench::snapshot_floor(keys, &dir)?;
            emit(&format!("{first_get_s} {total_s}"))?;
        }
        Command::Demo { dir, events, checkpoint_every, crash_after, shards } => {
            let args = demo::DemoArgs { dir: &dir, events, checkpoint_every, crash_after };
            match shards {
                Some(n) => sharded::run(&args, n as usize)?,
                None => demo::run(&args)?,
            }
        }
        Command::Log { dir } => commands::log(&dir)?,
        Command::Verify { dir, deep: _ } => return commands::verify(&dir),
        Command::Rollback { dir, id } => commands::rollback(&dir, &id)?,
        Command::Stat { dir } => commands::stat(&dir)?,
        Command::Get { dir, table, key, at, hex } => {
            commands::get(&commands::GetArgs { dir: &dir, table: &table, key: &key, hex, at: at.as_deref() })?
        }
        Command::Compact { dir, keep, keep_all } => maintenance::compact(&dir, keep, keep_all)?,
        Command::Pin { dir, id, name } => maintenance::pin(&dir, &id, &name)?,
        Command::Unpin { dir, name } => maintenance::unpin(&dir, &name)?,
        Command::Delete { dir, id } => maintenance::delete(&dir, &id)?,
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) | Err(CliError::BrokenPipe) => ExitCode::FAILURE,
        Err(CliError::Message(message)) => {
            // One line, whatever the message holds.
            eprintln!("error: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
        Err(CliError::Usage(message)) => {
            eprintln!("error: {}", message.replace(['\n', '\r'], " "));
            ExitCode::from(2)
        }
    }
}

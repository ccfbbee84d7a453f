//! The inspection commands: `log`, `verify`, `rollback`, `stat`, `get`. Each opens an existing
//! store (never creating one) and reports what it found. (`compact`, `pin`, `unpin` and `delete`
//! are in `maintenance`.)

use crate::show;
use crate::{emit, CliError};
use cairn::{CheckpointId, Options, Store};
use std::path::Path;

/// Open the store in `dir` for changes, without creating anything: a path that holds no store
/// is an error.
pub fn open_existing(dir: &Path) -> Result<Store, CliError> {
    Ok(Store::open_with(dir, Options::new().create_if_missing(false))?)
}

/// Open the store in `dir` read-only: shared lock, nothing written or removed.
pub fn open_read_only(dir: &Path) -> Result<Store, CliError> {
    Ok(Store::open_with(dir, Options::new().read_only(true))?)
}

/// A checkpoint id as typed by the user.
pub fn parse_id(text: &str) -> Result<CheckpointId, CliError> {
    text.trim().parse::<u64>().map(CheckpointId).map_err(|_| {
        CliError::from(format!("invalid checkpoint id {text:?}: expected a number as shown by `cairn log`"))
    })
}

/// Turn the engine's "not found" for checkpoint `id` into a message naming the ids that exist.
pub fn checkpoint_not_found(store: &Store, id: CheckpointId, err: cairn::Error) -> CliError {
    if !matches!(err, cairn::Error::NotFound(_)) {
        return err.into();
    }
    let existing = match store.checkpoints() {
        Ok(list) => match (list.first(), list.last()) {
            // Ids are never reused, so a gap-free range is exactly `first.id - last.id + 1` long.
            (Some(first), Some(last)) if (last.id.0 - first.id.0) as usize + 1 == list.len() => {
                format!("this store has checkpoints {} to {}", first.id, last.id)
            }
            (Some(first), Some(last)) => format!(
                "this store has {} checkpoints from {} to {}, some deleted; see `cairn log`",
                list.len(),
                first.id,
                last.id
            ),
            _ => "this store has no checkpoints yet".to_string(),
        },
        Err(e) => format!("listing checkpoints failed too: {e}"),
    };
    CliError::from(format!("no checkpoint {id} ({existing})"))
}

/// Whether `dir` is a coordinator's directory (a `global/` store and shard stores) rather
/// than a store.
fn is_coordinator(dir: &Path) -> bool {
    !dir.join("CAIRN").exists() && dir.join("global").join("CAIRN").is_file()
}

/// The lines of a store's JOURNAL: checkpoints that did not commit.
fn journal_lines(store: &Store, label: &str) -> Result<Vec<String>, CliError> {
    Ok(store.journal()?.iter().map(|e| format!("{label}{}", show::journal_line(e))).collect())
}

/// `cairn log`: a store's checkpoints and those that did not commit; for a coordinator's
/// directory, its global checkpoints, then what did not commit globally and in each shard.
pub fn log(dir: &Path) -> Result<(), CliError> {
    if is_coordinator(dir) {
        return coordinator_log(dir);
    }
    let store = open_read_only(dir)?;
    let head = store.head()?.map(|h| h.id);
    emit(show::log(&store.checkpoints()?, head).trim_end())?;
    let lines = journal_lines(&store, "")?;
    if !lines.is_empty() {
        emit(&format!("\nnot committed ({}, oldest first):", lines.len()))?;
        emit(&lines.join("\n"))?;
    }
    Ok(())
}

fn coordinator_log(dir: &Path) -> Result<(), CliError> {
    let global = open_read_only(&dir.join("global"))?;
    let head = global.head()?.map(|h| h.id);
    emit(&format!("coordinator {}: global checkpoints, oldest first (* = the one shards restore to)", dir.display()))?;
    for c in global.checkpoints()?.iter().filter(|c| c.kind == cairn::ManifestKind::Checkpoint) {
        let record = cairn::format::decode_global(&c.metadata)
            .map_err(|e| CliError::from(format!("global checkpoint {}: {e}", c.id)))?;
        let mark = if Some(c.id) == head { '*' } else { ' ' };
        let shards: Vec<String> = record.shards.iter().map(|p| p.id.to_string()).collect();
        emit(&format!(
            "{mark} global {:>6}  epoch {:>12}  {}  shard checkpoints [{}]  metadata {}",
            c.id.to_string(),
            record.epoch,
            show::utc(c.created_unix_ms),
            shards.join(" "),
            show::bytes_short(&record.metadata, 64)
        ))?;
    }
    let mut lines = journal_lines(&global, "global: ")?;
    for i in 0.. {
        let shard = dir.join(format!("shard-{i:04}"));
        if !shard.exists() {
            break;
        }
        lines.extend(journal_lines(&open_read_only(&shard)?, &format!("shard {i}: "))?);
    }
    if !lines.is_empty() {
        emit(&format!("\nnot committed ({}):", lines.len()))?;
        emit(&lines.join("\n"))?;
    }
    Ok(())
}

/// `cairn verify`; returns whether everything verified. Works without opening the store, so
/// damage that would stop an open (a corrupt HEAD, or a chunk the head needs) is reported by
/// object like any other.
pub fn verify(dir: &Path) -> Result<bool, CliError> {
    let report = Store::verify_path(dir)?;
    emit(&format!(
        "checked {} checkpoints (manifest, parent link, every run and chunk they reference) and {} segments \
         ({} chunks, {} bytes re-hashed)",
        report.checkpoints, report.segments, report.chunks, report.bytes
    ))?;
    for p in &report.problems {
        emit(&format!("problem: {}: {}", p.object, p.reason))?;
    }
    if report.is_ok() {
        emit("ok: no problems")?;
    } else {
        let n = report.problems.len();
        emit(&format!("FAILED: {n} problem{}", if n == 1 { "" } else { "s" }))?;
    }
    Ok(report.is_ok())
}

/// `cairn rollback`.
pub fn rollback(dir: &Path, id: &str) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let store = open_existing(dir)?;
    let before = store.head()?.map(|h| h.id);
    let info = store.rollback(id).map_err(|e| checkpoint_not_found(&store, id, e))?;
    let from = before.map_or_else(|| "no head".to_string(), |b| format!("checkpoint {b}"));
    emit(&format!("rolled back from {from} to checkpoint {}; it is the head and the working state now", info.id))?;
    emit(&show::log_header())?;
    emit(&show::log_line(&info, Some(info.id)))?;
    emit(&format!(
        "the next checkpoint will have parent {}; checkpoints after it on the old branch stay readable with \
         `cairn get --at`",
        info.id
    ))
}

/// `cairn stat`.
pub fn stat(dir: &Path) -> Result<(), CliError> {
    let store = open_read_only(dir)?;
    let s = store.stats()?;
    let head = match store.head()? {
        Some(h) => format!("{} (metadata {})", h.id, show::bytes_short(&h.metadata, 64)),
        None => "none".to_string(),
    };
    let lines = [
        format!("store: {}", store.location()),
        format!("head: {head}"),
        format!("tables: {}", s.tables),
        format!("keys: {}", s.keys),
        format!("dirty_keys: {}", s.dirty_keys),
        format!("checkpoints: {}", s.checkpoints),
        format!("segments: {}", s.segments),
        format!("chunks: {}", s.chunks),
        format!("head_runs: {}", s.head_runs),
        format!("bytes_on_disk: {}", s.bytes_on_disk),
        format!("live_bytes: {}", s.live_bytes),
        format!("space_amplification: {:.2}", s.space_amplification),
        // The engine counts this per open Store, and `stat` has just opened it.
        format!("bytes_rewritten: {} (by compaction since this open)", s.bytes_rewritten),
        format!("unreadable_segments: {}", s.unreadable_segments),
        format!("pins: {}", s.pins),
    ];
    let journal = store.journal()?;
    for line in lines {
        emit(&line)?;
    }
    let aborted = journal.iter().filter(|e| !e.failed).count();
    emit(&format!(
        "not_committed: {} ({aborted} aborted, {} failed; see `cairn log`)",
        journal.len(),
        journal.len() - aborted
    ))?;
    if let Some(last) = journal.last() {
        emit(&format!("last_not_committed: {}", show::journal_line(last)))?;
    }
    for (name, id) in store.pins()? {
        emit(&format!("pin {name:?} -> checkpoint {id}"))?;
    }
    for name in store.tables()? {
        let keys = store.table(&name)?.len()?;
        // A table created since the head checkpoint has no runs yet.
        let runs = s.runs_per_table.get(&name).copied().unwrap_or(0);
        emit(&format!("table {name:?}: {keys} keys, {runs} run{}", if runs == 1 { "" } else { "s" }))?;
    }
    Ok(())
}

/// What `cairn get` was asked for.
pub struct GetArgs<'a> {
    /// The store directory.
    pub dir: &'a Path,
    /// The table.
    pub table: &'a str,
    /// The key, as typed.
    pub key: &'a str,
    /// Whether `key` is hex.
    pub hex: bool,
    /// Read at this checkpoint instead of the working state.
    pub at: Option<&'a str>,
}

fn table_list(names: &[String]) -> String {
    if names.is_empty() {
        "there are no tables".to_string()
    } else {
        format!("tables: {}", names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "))
    }
}

/// `cairn get`.
pub fn get(args: &GetArgs<'_>) -> Result<(), CliError> {
    let key = if args.hex { show::parse_hex(args.key)? } else { args.key.as_bytes().to_vec() };
    let at = args.at.map(parse_id).transpose()?;
    let store = open_read_only(args.dir)?;
    let table = args.table;
    let (value, place) = match at {
        Some(id) => {
            let view = store.at(id).map_err(|e| checkpoint_not_found(&store, id, e))?;
            let place = format!("checkpoint {id}");
            let names = view.tables();
            if !names.iter().any(|n| n == table) {
                return Err(CliError::from(format!("no table {table:?} in {place} ({})", table_list(&names))));
            }
            (view.get(table, &key)?, place)
        }
        None => match store.existing_table(table)? {
            Some(t) => (t.get(&key)?, "the working state".to_string()),
            None => {
                let names = store.tables()?;
                return Err(CliError::from(format!(
                    "no table {table:?} in the working state ({})",
                    table_list(&names)
                )));
            }
        },
    };
    match value {
        Some(v) => emit(&show::value(&v)),
        None => Err(CliError::from(format!(
            "no value for key {} in table {table:?} of {place}",
            show::bytes_short(&key, 64)
        ))),
    }
}

//! JOURNAL: the checkpoints that did not commit (aborted or failed), newest last, so that
//! `cairn log` can show them after the process that ran them is gone. Diagnostic only:
//! recovery never reads it, a damaged or missing journal loses nothing. Replaced whole.

use super::{invalid, put_varint, DecodeError, Reader, FORMAT_VERSION};

const JOURNAL_MAGIC: &[u8; 8] = b"CAIRNJNL";

/// Most entries a journal keeps (older ones are dropped).
pub const MAX_JOURNAL_ENTRIES: usize = 64;

/// Longest reason kept (longer ones are cut at a character boundary).
pub const MAX_JOURNAL_REASON_LEN: usize = 1024;

/// Most bytes a journal takes.
pub const MAX_JOURNAL_LEN: usize = 16 + MAX_JOURNAL_ENTRIES * (8 * 5 + 1 + 2 + MAX_JOURNAL_REASON_LEN) + 32;

/// One checkpoint that did not commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// When it was triggered, milliseconds since the Unix epoch.
    pub triggered_unix_ms: u64,
    /// Capture pause on the caller's thread, microseconds.
    pub capture_pause_us: u64,
    /// From capture to its end, microseconds.
    pub persist_us: u64,
    /// Keys it captured.
    pub dirty_keys: u64,
    /// The checkpoint HEAD named when it ended (0: none).
    pub head_id: u64,
    /// `false`: aborted; `true`: failed.
    pub failed: bool,
    /// Why (UTF-8, at most [`MAX_JOURNAL_REASON_LEN`] bytes).
    pub reason: String,
}

/// Encode a journal (at most [`MAX_JOURNAL_ENTRIES`] entries, reasons within the bound).
pub fn encode_journal(entries: &[JournalEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.len() * 96);
    out.extend_from_slice(JOURNAL_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        for v in [e.triggered_unix_ms, e.capture_pause_us, e.persist_us, e.dirty_keys, e.head_id] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(u8::from(e.failed));
        put_varint(&mut out, e.reason.len() as u64);
        out.extend_from_slice(e.reason.as_bytes());
    }
    let check = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&check);
    out
}

/// Decode and verify a journal.
pub fn decode_journal(bytes: &[u8]) -> Result<Vec<JournalEntry>, DecodeError> {
    let body_len = bytes.len().checked_sub(32).ok_or(DecodeError::Truncated { offset: 0, needed: 32 })?;
    let (body, check) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != check {
        return Err(DecodeError::Checksum("JOURNAL (blake3)"));
    }
    let mut r = Reader::new(body);
    r.magic(JOURNAL_MAGIC, "CAIRNJNL")?;
    r.version()?;
    if r.array::<2>()? != [0; 2] {
        return Err(invalid("JOURNAL header", "reserved bytes are not zero"));
    }
    let count = r.u32()? as usize;
    // Each entry takes at least 42 bytes: the count is bounded by what is present.
    if count > MAX_JOURNAL_ENTRIES || count > r.remaining() / 42 {
        return Err(invalid("journal entry count", format!("{count} entries do not fit")));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let (triggered_unix_ms, capture_pause_us, persist_us, dirty_keys, head_id) =
            (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let failed = match r.u8()? {
            0 => false,
            1 => true,
            other => return Err(invalid("journal outcome", format!("{other} is neither 0 nor 1"))),
        };
        let reason = r.bytes_max("journal reason", MAX_JOURNAL_REASON_LEN)?;
        let reason = std::str::from_utf8(reason).map_err(|_| invalid("journal reason", "not UTF-8"))?.to_string();
        entries.push(JournalEntry {
            triggered_unix_ms,
            capture_pause_us,
            persist_us,
            dirty_keys,
            head_id,
            failed,
            reason,
        });
    }
    r.finish("JOURNAL")?;
    Ok(entries)
}

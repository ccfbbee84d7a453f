//! How the CLI prints things: times, bytes, checkpoint log lines. Pure functions, no I/O.

use cairn::{CheckpointId, CheckpointInfo, ManifestKind};
use std::time::Duration;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            // `nibble` < 16, so the lookup always succeeds.
            s.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'?')));
        }
    }
    s
}

/// Decode hex text (either case, even length, no prefix) into bytes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex key {text:?} has an odd number of digits"));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
            .ok_or_else(|| format!("hex key {text:?} has a non-hex character {:?}", char::from(c)))
    };
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Ok((nibble(*hi)? << 4) | nibble(*lo)?),
            _ => Err(format!("hex key {text:?} has an odd number of digits")),
        })
        .collect()
}

/// `bytes` as text when it is UTF-8 without control characters.
pub fn printable(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok().filter(|s| !s.chars().any(char::is_control))
}

/// Caller bytes (metadata, keys) for one line: quoted text when printable, else `0x` and hex;
/// anything longer than `max_len` bytes is cut and its full length noted.
pub fn bytes_short(bytes: &[u8], max_len: usize) -> String {
    let cut = bytes.get(..max_len).unwrap_or(bytes);
    let more = if cut.len() < bytes.len() { format!("... ({} bytes)", bytes.len()) } else { String::new() };
    // A cut may split a UTF-8 character; judge printability on the whole value, then shorten
    // the text at a character boundary.
    match printable(bytes) {
        Some(text) => {
            let mut end = cut.len().min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{:?}{more}", text.get(..end).unwrap_or(text))
        }
        None => format!("0x{}{more}", hex(cut)),
    }
}

/// A value for `cairn get`: the text itself when printable, else `0x` and hex; an 8-byte
/// binary value is also shown as a little-endian u64 (the demo's counts).
pub fn value(bytes: &[u8]) -> String {
    if let Some(text) = printable(bytes) {
        return text.to_string();
    }
    match <[u8; 8]>::try_from(bytes) {
        Ok(le) => format!("0x{} (u64 little-endian: {})", hex(bytes), u64::from_le_bytes(le)),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

/// Unix milliseconds as UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), after Howard Hinnant's
/// `civil_from_days` (<http://howardhinnant.github.io/date_algorithms.html>), unsigned since
/// times before 1970 cannot be stored.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A duration in milliseconds with microsecond precision, e.g. `12.345ms`.
pub fn duration(d: Duration) -> String {
    format!("{}.{:03}ms", d.as_micros() / 1000, d.as_micros() % 1000)
}

/// A checkpoint's kind as `cairn log` shows it.
pub fn kind(kind: ManifestKind) -> &'static str {
    match kind {
        ManifestKind::Checkpoint => "checkpoint",
        ManifestKind::Compaction => "compaction",
    }
}

/// A checkpoint that did not commit, as `cairn log` and `cairn stat` show it.
pub fn journal_line(e: &cairn::JournalEntry) -> String {
    format!(
        "{}  {}  after checkpoint {}  dirty_keys {}  capture {}  persist {}  {}",
        utc(e.triggered_unix_ms),
        if e.failed { "failed " } else { "aborted" },
        e.head_id,
        e.dirty_keys,
        duration(Duration::from_micros(e.capture_pause_us)),
        duration(Duration::from_micros(e.persist_us)),
        e.reason.replace(['\n', '\r'], " ")
    )
}

/// The header of [`log_line`]'s columns.
pub fn log_header() -> String {
    format!(
        "  {:>10}  {:>6}  {:<10}  {:<24}  {:>10}  {:>13}  {:>10}  {:>13}  {:>12}  metadata",
        "checkpoint",
        "parent",
        "kind",
        "created (UTC)",
        "dirty_keys",
        "bytes_written",
        "chunks_new",
        "chunks_reused",
        "duration"
    )
}

/// One checkpoint as a line of `cairn log`; the head is marked with `*`.
pub fn log_line(c: &CheckpointInfo, head: Option<CheckpointId>) -> String {
    let mark = if Some(c.id) == head { '*' } else { ' ' };
    let parent = c.parent.map_or_else(|| "-".to_string(), |p| p.to_string());
    format!(
        "{mark} {:>10}  {:>6}  {:<10}  {:<24}  {:>10}  {:>13}  {:>10}  {:>13}  {:>12}  {}",
        c.id.to_string(),
        parent,
        kind(c.kind),
        utc(c.created_unix_ms),
        c.dirty_keys,
        c.bytes_written,
        c.chunks_new,
        c.chunks_reused,
        duration(c.duration),
        bytes_short(&c.metadata, 64)
    )
}

/// The whole log: header, one line per checkpoint (oldest first), and which one is the head.
pub fn log(checkpoints: &[CheckpointInfo], head: Option<CheckpointId>) -> String {
    if checkpoints.is_empty() {
        return "no checkpoints yet\n".to_string();
    }
    let mut out = log_header();
    out.push('\n');
    for c in checkpoints {
        out.push_str(&log_line(c, head));
        out.push('\n');
    }
    let compactions = checkpoints.iter().filter(|c| c.kind == ManifestKind::Compaction).count();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let n = checkpoints.len();
    let count = match compactions {
        0 => format!("{n} checkpoint{}", plural(n)),
        c => format!("{n} checkpoint{} ({c} compaction{})", plural(n), plural(c)),
    };
    match head {
        Some(h) => out.push_str(&format!("{count}; * = head ({h}), the working state's base\n")),
        None => out.push_str(&format!("{count}; no head\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(utc(4_102_444_800_001), "2100-01-01T00:00:00.001Z");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(parse_hex("00AB7f"), Ok(vec![0x00, 0xab, 0x7f]));
        assert_eq!(parse_hex("0x01"), Ok(vec![1]));
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("é1").is_err());
        assert!(parse_hex("éé").is_err());
    }

    #[test]
    fn values_and_metadata_print_readably() {
        assert_eq!(value(b"hello"), "hello");
        assert_eq!(value(&5u64.to_le_bytes()), "0x0500000000000000 (u64 little-endian: 5)");
        assert_eq!(value(&[0xff, 0]), "0xff00");
        assert_eq!(bytes_short(b"20000", 64), "\"20000\"");
        assert_eq!(bytes_short(&[1, 2], 64), "0x0102");
        assert_eq!(bytes_short("ééé".as_bytes(), 3), "\"é\"... (6 bytes)");
        assert_eq!(bytes_short(&[9; 4], 2), "0x0909... (4 bytes)");
    }
}

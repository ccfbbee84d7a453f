//! PINS: the pinned savepoints, which retention never removes while pinned. Replaced whole,
//! atomically, on every pin and unpin.

use super::{invalid, put_varint, CheckpointId, DecodeError, Reader, FORMAT_VERSION, MAX_PINS, MAX_TABLE_NAME_LEN};

const PINS_MAGIC: &[u8; 8] = b"CAIRNPIN";

/// One pinned checkpoint and the name it was pinned under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The checkpoint.
    pub id: CheckpointId,
    /// The savepoint's name (1 to 255 bytes of UTF-8, unique).
    pub name: String,
}

/// Encode the pin list (sorted by name, names unique).
pub fn encode_pins(pins: &[Pin]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + pins.len() * 24);
    out.extend_from_slice(PINS_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&(pins.len() as u32).to_le_bytes());
    for p in pins {
        out.extend_from_slice(&p.id.0.to_le_bytes());
        put_varint(&mut out, p.name.len() as u64);
        out.extend_from_slice(p.name.as_bytes());
    }
    let check = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&check);
    out
}

/// Decode and verify the pin list.
pub fn decode_pins(bytes: &[u8]) -> Result<Vec<Pin>, DecodeError> {
    let body_len = bytes.len().checked_sub(32).ok_or(DecodeError::Truncated { offset: 0, needed: 32 })?;
    let (body, check) = bytes.split_at(body_len);
    if blake3::hash(body).as_bytes() != check {
        return Err(DecodeError::Checksum("PINS (blake3)"));
    }
    let mut r = Reader::new(body);
    r.magic(PINS_MAGIC, "CAIRNPIN")?;
    r.version()?;
    if r.array::<2>()? != [0; 2] {
        return Err(invalid("PINS header", "reserved bytes are not zero"));
    }
    let count = r.u32()? as usize;
    // Each pin takes at least 10 bytes: the count is bounded by what is present.
    if count > MAX_PINS || count > r.remaining() / 10 {
        return Err(invalid("pin count", format!("{count} pins do not fit")));
    }
    let mut pins: Vec<Pin> = Vec::with_capacity(count);
    for _ in 0..count {
        let id = CheckpointId(r.u64()?);
        let name = r.bytes_max("pin name", MAX_TABLE_NAME_LEN)?;
        let name = std::str::from_utf8(name).map_err(|_| invalid("pin name", "not UTF-8"))?.to_string();
        if id.0 == 0 || name.is_empty() {
            return Err(invalid("pin", "zero id or empty name"));
        }
        if pins.last().is_some_and(|p| p.name >= name) {
            return Err(invalid("pin order", "names are not strictly increasing"));
        }
        pins.push(Pin { id, name });
    }
    r.finish("PINS")?;
    Ok(pins)
}

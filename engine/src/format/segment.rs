//! Segments: immutable files holding chunks back to back, with a checksummed chunk table at
//! the end. A segment is written whole, once, and never modified; it is deleted only when no
//! retained checkpoint needs any chunk in it.

use super::{
    invalid, ChunkHash, ChunkKind, DecodeError, Reader, SegmentId, FORMAT_VERSION, MAX_CHUNK_LEN,
    MAX_SEGMENT_FOOTER_LEN,
};

const SEGMENT_MAGIC: &[u8; 8] = b"CAIRNSEG";
const SEGMENT_END_MAGIC: &[u8; 8] = b"CAIRNEND";
/// Header: magic (8), version (2), reserved (6), segment id (8).
pub const SEGMENT_HEADER_LEN: usize = 24;
/// Trailer: footer offset (8), chunk count (4), reserved (4), check (32), magic (8).
pub const SEGMENT_TRAILER_LEN: usize = 56;
/// One record of the chunk table: hash (32), offset (8), stored length (4), raw length (4),
/// codec (1), kind (1).
pub(crate) const FOOTER_RECORD_LEN: usize = 50;

/// How a chunk's bytes are stored in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// LZ4 block format; the raw length is in the chunk table.
    Lz4 = 1,
    /// A patch against another chunk (an entries chunk only; see `delta.rs`).
    Delta = 2,
}

impl TryFrom<u8> for Codec {
    type Error = DecodeError;
    fn try_from(b: u8) -> Result<Self, DecodeError> {
        match b {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Lz4),
            2 => Ok(Codec::Delta),
            other => Err(invalid("codec", format!("unknown codec {other}"))),
        }
    }
}

/// Where one chunk lives in a segment, as recorded in the segment's chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentChunk {
    /// The chunk's name.
    pub hash: ChunkHash,
    /// Byte offset of its stored bytes in the segment file.
    pub offset: u64,
    /// Stored (possibly compressed) length.
    pub stored_len: u32,
    /// Uncompressed length; the hash covers these bytes.
    pub raw_len: u32,
    /// How it is stored.
    pub codec: Codec,
    /// What it holds.
    pub kind: ChunkKind,
}

/// The fixed-size end of a segment, read first to find the chunk table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentTrailer {
    /// Offset of the chunk table (equals the end of the last chunk).
    pub footer_offset: u64,
    /// Number of records in the chunk table.
    pub chunk_count: u32,
    check: [u8; 32],
}

impl SegmentTrailer {
    /// Length of the chunk table in bytes.
    pub fn footer_len(&self) -> u64 {
        u64::from(self.chunk_count) * FOOTER_RECORD_LEN as u64
    }
}

/// Builds a segment in memory: header, chunks, then chunk table and trailer on `finish`.
pub struct SegmentWriter {
    id: SegmentId,
    bytes: Vec<u8>,
    table: Vec<SegmentChunk>,
}

impl SegmentWriter {
    /// Start segment `id`.
    pub fn new(id: SegmentId) -> Self {
        let mut bytes = Vec::with_capacity(64 * 1024);
        bytes.extend_from_slice(&segment_header(id));
        SegmentWriter { id, bytes, table: Vec::new() }
    }

    /// The segment being built.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// Number of chunks appended so far.
    pub fn chunk_count(&self) -> usize {
        self.table.len()
    }

    /// Bytes appended so far (header and chunks).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when no chunk has been appended.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Append a chunk whose raw bytes are `raw` (already hashed to `hash`), compressing it with
    /// `codec` when that makes it smaller. Returns where it was placed.
    pub fn push(&mut self, hash: ChunkHash, kind: ChunkKind, raw: &[u8], codec: Codec) -> SegmentChunk {
        debug_assert!(raw.len() <= MAX_CHUNK_LEN);
        debug_assert_eq!(hash, ChunkHash::of(raw), "a chunk is verified before it is written");
        let offset = self.bytes.len() as u64;
        let (codec, stored_len) = match codec {
            Codec::Lz4 => {
                let compressed = lz4_flex::block::compress(raw);
                if compressed.len() < raw.len() {
                    self.bytes.extend_from_slice(&compressed);
                    (Codec::Lz4, compressed.len())
                } else {
                    self.bytes.extend_from_slice(raw);
                    (Codec::None, raw.len())
                }
            }
            // A delta is made against a base ([`SegmentWriter::push_delta`]), not from raw bytes.
            Codec::None | Codec::Delta => {
                self.bytes.extend_from_slice(raw);
                (Codec::None, raw.len())
            }
        };
        let chunk =
            SegmentChunk { hash, offset, stored_len: stored_len as u32, raw_len: raw.len() as u32, codec, kind };
        self.table.push(chunk);
        chunk
    }

    /// Add the entries chunk `hash` of `raw_len` raw bytes, stored as the delta `stored` (made
    /// by [`super::encode_delta`]).
    pub fn push_delta(&mut self, hash: ChunkHash, raw_len: usize, stored: &[u8]) -> SegmentChunk {
        debug_assert!(raw_len <= MAX_CHUNK_LEN && stored.len() <= MAX_CHUNK_LEN);
        let offset = self.bytes.len() as u64;
        self.bytes.extend_from_slice(stored);
        let chunk = SegmentChunk {
            hash,
            offset,
            stored_len: stored.len() as u32,
            raw_len: raw_len as u32,
            codec: Codec::Delta,
            kind: ChunkKind::Entries,
        };
        self.table.push(chunk);
        chunk
    }

    /// Append the chunk table and trailer; returns the whole segment and its chunk table.
    pub fn finish(mut self) -> (Vec<u8>, Vec<SegmentChunk>) {
        let footer_offset = self.bytes.len() as u64;
        for c in &self.table {
            self.bytes.extend_from_slice(&c.hash.0);
            self.bytes.extend_from_slice(&c.offset.to_le_bytes());
            self.bytes.extend_from_slice(&c.stored_len.to_le_bytes());
            self.bytes.extend_from_slice(&c.raw_len.to_le_bytes());
            self.bytes.push(c.codec as u8);
            self.bytes.push(c.kind as u8);
        }
        let count = self.table.len() as u32;
        let mut fields = [0u8; 16];
        fields[..8].copy_from_slice(&footer_offset.to_le_bytes());
        fields[8..12].copy_from_slice(&count.to_le_bytes());
        let header = segment_header(self.id);
        let check = trailer_check(&header, self.bytes.get(footer_offset as usize..).unwrap_or_default(), &fields);
        self.bytes.extend_from_slice(&fields);
        self.bytes.extend_from_slice(&check);
        self.bytes.extend_from_slice(SEGMENT_END_MAGIC);
        (self.bytes, self.table)
    }
}

fn segment_header(id: SegmentId) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.0.to_le_bytes());
    h
}

/// The trailer check binds the header (and so the segment id), the chunk table and the
/// trailer's own fields: a torn, truncated or misplaced table is rejected before it is used.
fn trailer_check(header: &[u8], footer: &[u8], fields: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"cairn segment trailer v1");
    h.update(header);
    h.update(footer);
    h.update(fields);
    *h.finalize().as_bytes()
}

/// Decode a segment header and return its id.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentId, DecodeError> {
    let mut r = Reader::new(bytes);
    r.magic(SEGMENT_MAGIC, "CAIRNSEG")?;
    r.version()?;
    if r.array::<6>()? != [0; 6] {
        return Err(invalid("segment header", "reserved bytes are not zero"));
    }
    let id = SegmentId(r.u64()?);
    r.finish("segment header")?;
    Ok(id)
}

/// Decode the fixed-size trailer (the last [`SEGMENT_TRAILER_LEN`] bytes) of a segment of
/// `file_len` bytes, checking that the chunk table it points to fits in the file.
pub fn decode_segment_trailer(bytes: &[u8], file_len: u64) -> Result<SegmentTrailer, DecodeError> {
    let mut r = Reader::new(bytes);
    let footer_offset = r.u64()?;
    let chunk_count = r.u32()?;
    if r.u32()? != 0 {
        return Err(invalid("segment trailer", "reserved bytes are not zero"));
    }
    let check = r.array::<32>()?;
    r.magic(SEGMENT_END_MAGIC, "CAIRNEND")?;
    r.finish("segment trailer")?;
    let t = SegmentTrailer { footer_offset, chunk_count, check };
    if t.footer_len() > MAX_SEGMENT_FOOTER_LEN as u64 {
        return Err(invalid("segment chunk count", format!("{chunk_count} records exceed the table bound")));
    }
    let expected_len =
        footer_offset.checked_add(t.footer_len()).and_then(|n| n.checked_add(SEGMENT_TRAILER_LEN as u64));
    if footer_offset < SEGMENT_HEADER_LEN as u64 || expected_len != Some(file_len) {
        return Err(invalid("segment length", format!("trailer does not match a file of {file_len} bytes")));
    }
    Ok(t)
}

/// Decode and verify a segment's chunk table, given its header and the table's bytes (located
/// through `trailer`). Returns the chunks in file order.
pub fn decode_segment_footer(
    header: &[u8],
    footer: &[u8],
    trailer: &SegmentTrailer,
) -> Result<Vec<SegmentChunk>, DecodeError> {
    decode_segment_header(header)?;
    if footer.len() as u64 != trailer.footer_len() {
        return Err(invalid("segment chunk table", "length does not match the trailer"));
    }
    let mut fields = [0u8; 16];
    fields[..8].copy_from_slice(&trailer.footer_offset.to_le_bytes());
    fields[8..12].copy_from_slice(&trailer.chunk_count.to_le_bytes());
    if trailer_check(header, footer, &fields) != trailer.check {
        return Err(DecodeError::Checksum("segment chunk table"));
    }
    let mut r = Reader::new(footer);
    let mut next_offset = SEGMENT_HEADER_LEN as u64;
    let mut chunks = Vec::with_capacity(trailer.chunk_count as usize);
    for _ in 0..trailer.chunk_count {
        let hash = ChunkHash(r.array()?);
        let offset = r.u64()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let codec = Codec::try_from(r.u8()?)?;
        let kind = ChunkKind::try_from(r.u8()?)?;
        if offset != next_offset {
            return Err(invalid("chunk offset", "chunks are not contiguous"));
        }
        if stored_len as usize > MAX_CHUNK_LEN || raw_len as usize > MAX_CHUNK_LEN || raw_len == 0 {
            return Err(invalid("chunk length", "outside the chunk bound"));
        }
        if codec == Codec::None && stored_len != raw_len {
            return Err(invalid("chunk length", "an uncompressed chunk's lengths differ"));
        }
        if codec == Codec::Delta && kind != ChunkKind::Entries {
            return Err(invalid("codec", "only an entries chunk may be stored as a delta"));
        }
        next_offset += u64::from(stored_len);
        chunks.push(SegmentChunk { hash, offset, stored_len, raw_len, codec, kind });
    }
    r.finish("segment chunk table")?;
    if next_offset != trailer.footer_offset {
        return Err(invalid("segment chunk table", "chunks do not end where the table starts"));
    }
    Ok(chunks)
}

/// Decode a whole segment file's header, trailer and chunk table (not the chunks themselves:
/// use [`segment_chunk_bytes`] for each).
pub fn decode_segment(bytes: &[u8]) -> Result<(SegmentId, Vec<SegmentChunk>), DecodeError> {
    let len = bytes.len();
    let header =
        bytes.get(..SEGMENT_HEADER_LEN).ok_or(DecodeError::Truncated { offset: 0, needed: SEGMENT_HEADER_LEN })?;
    let id = decode_segment_header(header)?;
    let trailer_bytes = len
        .checked_sub(SEGMENT_TRAILER_LEN)
        .and_then(|start| bytes.get(start..))
        .ok_or(DecodeError::Truncated { offset: len, needed: SEGMENT_TRAILER_LEN })?;
    let trailer = decode_segment_trailer(trailer_bytes, len as u64)?;
    let footer = bytes
        .get(trailer.footer_offset as usize..len - SEGMENT_TRAILER_LEN)
        .ok_or(invalid("segment chunk table", "out of range"))?;
    let chunks = decode_segment_footer(header, footer, &trailer)?;
    Ok((id, chunks))
}

/// Turn a chunk's stored bytes back into its raw bytes and verify them against its hash.
/// This and [`segment_chunk_into_raw`] are the only ways chunk bytes read from storage reach
/// the rest of cairn.
///
/// A delta chunk needs its base too: this refuses it, and [`super::apply_delta`] rebuilds it.
pub fn segment_chunk_bytes(chunk: &SegmentChunk, stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_stored_len(chunk, stored)?;
    let raw = match chunk.codec {
        Codec::None => stored.to_vec(),
        Codec::Lz4 => decompress_lz4(chunk, stored)?,
        Codec::Delta => return Err(needs_base()),
    };
    verified(chunk, raw)
}

/// [`segment_chunk_bytes`] for stored bytes the caller owns: a chunk stored as is comes back
/// in the very allocation it was read into, not copied (a restore reads every chunk of the
/// state once; the copy cost as much as the read).
pub fn segment_chunk_into_raw(chunk: &SegmentChunk, stored: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    check_stored_len(chunk, &stored)?;
    let raw = match chunk.codec {
        Codec::None => stored,
        Codec::Lz4 => decompress_lz4(chunk, &stored)?,
        Codec::Delta => return Err(needs_base()),
    };
    verified(chunk, raw)
}

fn needs_base() -> DecodeError {
    invalid("codec", "a delta chunk is rebuilt from its base (apply_delta)")
}

pub(super) fn check_stored_len(chunk: &SegmentChunk, stored: &[u8]) -> Result<(), DecodeError> {
    if stored.len() != chunk.stored_len as usize {
        return Err(invalid("chunk length", "stored bytes have the wrong length"));
    }
    if chunk.raw_len as usize > MAX_CHUNK_LEN {
        return Err(invalid("chunk length", "outside the chunk bound"));
    }
    Ok(())
}

fn decompress_lz4(chunk: &SegmentChunk, stored: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let raw_len = chunk.raw_len as usize;
    let raw = lz4_flex::block::decompress(stored, raw_len).map_err(|e| invalid("lz4 chunk", e.to_string()))?;
    if raw.len() != raw_len {
        return Err(invalid("lz4 chunk", "decompressed length differs from the table"));
    }
    Ok(raw)
}

/// `raw` if its blake3 is the chunk's name.
pub(super) fn verified(chunk: &SegmentChunk, raw: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    if ChunkHash::of(&raw) != chunk.hash {
        return Err(DecodeError::Checksum("chunk content (blake3)"));
    }
    Ok(raw)
}
